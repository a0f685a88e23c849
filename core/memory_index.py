"""How a memory write reaches the tiers: durable in Postgres first (the ack), then embedded and indexed.

A record written with ``index`` false has no vector: one it had before is deleted after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from core.embedding.types import TextEmbedder
from core.ids import deterministic_id
from core.models import MemoryRecord
from core.points import memory_point
from core.ports import EpisodicStore, VectorIndex
from core.retrieval.bm25_sparse import Bm25Sparse


async def write_memories(
    records: Sequence[MemoryRecord],
    *,
    was_indexed: set[uuid.UUID],
    changed_by: str | None,
    episodic: EpisodicStore,
    vectors: VectorIndex | None,
    embedder: TextEmbedder | None,
    lexical: Bm25Sparse,
) -> list[MemoryRecord]:
    """Store ``records`` (each a new version, by ``changed_by``), then embed and upsert the indexed ones;
    ``was_indexed``: ids whose earlier state had a vector. Returns the records as stored."""
    out = [r if r.indexed else r.model_copy(update={"model_version": None}) for r in records]
    indexed = [r for r in out if r.indexed]
    dropped = [r for r in out if not r.indexed and r.id in was_indexed]
    if embedder is None or vectors is None or not indexed:
        await episodic.upsert_memories(out, changed_by=changed_by)
        await _drop_vectors(dropped, vectors)
        return out
    result = await embedder.embed([r.content for r in indexed])
    version = result.version
    stamped = {r.id: r.model_copy(update={"model_version": version.key}) for r in indexed}
    out = [stamped.get(r.id, r) for r in out]
    await episodic.upsert_memories(out, changed_by=changed_by)
    await _drop_vectors(dropped, vectors)
    collection = await vectors.ensure_collection(version)
    await vectors.upsert(
        [
            memory_point(stamped[r.id], v, version, terms=lexical.document(r.content))
            for r, v in zip(indexed, result.vectors, strict=True)
        ],
        collection=collection,
    )
    return out


async def _drop_vectors(records: Sequence[MemoryRecord], vectors: VectorIndex | None) -> None:
    """Delete the live collection's points of memories that stopped being indexed."""
    if not records or vectors is None:
        return
    live = await vectors.live_version()
    if live is None:
        return
    await vectors.delete_ids([deterministic_id(r.tenant_id, "memory", str(r.id), live) for r in records])
