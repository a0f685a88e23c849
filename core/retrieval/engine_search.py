"""Semantic and lexical candidates from ONE call to the semantic engine.

The engine holds each point's dense vector and its BM25 term vector (core.retrieval.bm25_sparse); one
query batch returns the tenant's nearest points and its best BM25 matches, IDF counted over the tenant's
own points. A long record also has chunk points (dense only): each record counts once, by its best point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.embedding.types import TextEmbedder
from core.errors import EmbeddingError
from core.models import JsonDict, Tier, VectorHit
from core.ports import VectorIndex
from core.retrieval.bm25_sparse import Bm25Sparse
from core.retrieval.candidates import Candidate, from_vector_hit
from core.retrieval.quality import lexical_query

# Points fetched per wanted record on a second ask, when chunk points crowd records out of the first.
_CHUNK_OVERFETCH = 2


@dataclass
class EngineLists:
    """Each list's candidates, best first; ``dense_error`` says why the dense list is missing."""

    dense: list[Candidate]
    lexical: list[Candidate]
    dense_error: EmbeddingError | None = None


def best_per_record(hits: Sequence[VectorHit], *, tier: Tier, depth: int) -> list[Candidate]:
    """Candidates of the first ``depth`` distinct records in ``hits`` (a chunk stands for its record)."""
    found: dict[str, Candidate] = {}
    for hit in hits:
        candidate = from_vector_hit(hit, rank=len(found), tier=tier)
        if candidate.key not in found:
            found[candidate.key] = candidate
            if len(found) == depth:
                break
    return list(found.values())


async def engine_candidates(
    vectors: VectorIndex,
    embedder: TextEmbedder | None,
    encoder: Bm25Sparse | None,
    *,
    live_version: str,
    tenant_id: str,
    query: str,
    depth: int,
    filters: JsonDict | None,
) -> EngineLists:
    """Dense (when ``embedder``) and lexical (when ``encoder``) candidates. An embedding failure leaves
    the lexical list standing; a store failure (StoreUnavailable) propagates."""
    vector: list[float] | None = None
    error: EmbeddingError | None = None
    if embedder is not None:
        try:
            embedded = await embedder.embed([query])
            if embedded.version.key != live_version:
                raise EmbeddingError(
                    f"query model {embedded.version.key} differs from the collection's {live_version}"
                )
            vector = list(embedded.vectors[0])
        except EmbeddingError as exc:
            error = exc
    terms = encoder.query(lexical_query(query)) if encoder is not None else None
    if vector is None and terms is None:
        return EngineLists([], [], error)
    dense_hits, lexical_hits = await vectors.search_hybrid(
        vector, terms, tenant_id=tenant_id, k=depth, filters=filters
    )
    dense = best_per_record(dense_hits, tier=Tier.SEMANTIC, depth=depth)
    if vector is not None and len(dense) < depth and len(dense_hits) == depth:
        more, _ = await vectors.search_hybrid(
            vector, None, tenant_id=tenant_id, k=depth * _CHUNK_OVERFETCH, filters=filters
        )
        dense = best_per_record(more, tier=Tier.SEMANTIC, depth=depth)
    return EngineLists(dense, best_per_record(lexical_hits, tier=Tier.EPISODIC, depth=depth), error)


def merge_by_score(fresh: Sequence[Candidate], engine: Sequence[Candidate], *, depth: int) -> list[Candidate]:
    """One lexical list from Postgres' unconsolidated episodes and the engine's matches, by BM25 score
    (both BM25 of the same query terms); an episode consolidated in between counts once, as the engine's."""
    merged = {c.key: c for c in fresh}
    merged.update({c.key: c for c in engine})
    ranked = sorted(merged.values(), key=lambda c: -c.raw_score)[:depth]
    for i, cand in enumerate(ranked):
        cand.rank = i
    return ranked
