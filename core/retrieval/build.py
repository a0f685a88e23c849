"""Builds the HybridRetriever from settings: one wiring for the Retriever deployment and in-process use."""

from __future__ import annotations

from typing import Any

from core.embedding.types import TextEmbedder
from core.ports import VectorIndex
from core.resources import Resources
from core.retrieval.bm25_postgres import PostgresBm25Search
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
) -> HybridRetriever:
    """The retriever over borrowed clients, with the lexical scoring ``settings.retrieval`` names."""
    r = settings.retrieval
    lexical: Any = resources.episodic  # ts_rank_cd over tsvector
    if r.lexical_backend == "bm25":
        lexical = PostgresBm25Search(
            resources.pool,
            k1=r.bm25_k1,
            b=r.bm25_b,
            use_context=r.lexical_neighbour_window > 0,
            neighbour_weight=r.lexical_neighbour_weight,
            timeout_s=settings.postgres.command_timeout_s,
            prune_df=r.bm25_prune_df,
            prune_min_docs=r.bm25_prune_min_docs,
            max_scan_rows=r.bm25_max_scan_rows,
        )
    counter = token_counter or HFTokenCounter.from_file(resolve_tokenizer_path(r.tokenizer))
    return HybridRetriever(
        working=resources.working,
        lexical=lexical,
        vectors=vectors,
        embedder=embedder,
        settings=r,
        token_counter=counter,
    )
