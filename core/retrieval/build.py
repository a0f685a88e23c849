"""Builds the HybridRetriever from settings: one wiring for the Retriever deployment and in-process use."""

from __future__ import annotations

from typing import Any

from core.embedding.types import TextEmbedder
from core.ports import VectorIndex
from core.resources import Resources
from core.retrieval.bm25_postgres import PostgresBm25Search
from core.retrieval.bm25_sparse import bm25_sparse
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.tokens import HFTokenCounter, TokenCounter, resolve_tokenizer_path
from core.settings import Settings


def build_hybrid_retriever(
    settings: Settings,
    *,
    resources: Resources,
    vectors: VectorIndex,
    embedder: TextEmbedder,
    token_counter: TokenCounter | None = None,
    engine_lexical: bool = True,
) -> HybridRetriever:
    """The retriever over borrowed clients, with the lexical scoring ``settings.retrieval`` names.

    ``engine_lexical=False``: lexical search in Postgres only, whatever the settings (a stand-in for the
    Retriever while it is away must not wait on the engine it owns).
    """
    r = settings.retrieval

    def postgres_bm25(*, use_context: bool) -> PostgresBm25Search:
        return PostgresBm25Search(
            resources.pool,
            k1=r.bm25_k1,
            b=r.bm25_b,
            use_context=use_context,
            neighbour_weight=r.lexical_neighbour_weight,
            timeout_s=settings.postgres.command_timeout_s,
            prune_df=r.bm25_prune_df,
            prune_min_docs=r.bm25_prune_min_docs,
            max_scan_rows=r.bm25_max_scan_rows,
        )

    # Postgres BM25 over every episode: the lexical tier itself (bm25), or, with the engine's, what
    # answers for a collection without BM25 vectors and while the engine is down.
    lexical: Any = resources.episodic  # ts_rank_cd over tsvector
    if r.lexical_backend in ("bm25", "engine"):
        lexical = postgres_bm25(use_context=r.lexical_neighbour_window > 0)
    engine = engine_lexical and r.lexical_backend == "engine"
    counter = token_counter or HFTokenCounter.from_file(resolve_tokenizer_path(r.tokenizer))
    return HybridRetriever(
        working=resources.working,
        lexical=lexical,
        vectors=vectors,
        embedder=embedder,
        settings=r,
        token_counter=counter,
        terms=bm25_sparse(r) if engine else None,
        # Unconsolidated episodes carry no neighbour context yet: their own terms, through the partial index.
        fresh=postgres_bm25(use_context=False) if engine else None,
    )
