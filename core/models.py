"""Domain values: frozen pydantic models shared by every tier.

The API's wire types (episodes, memories, snippets...) are defined once in the client package
(:mod:`hybridmem_client.models`) and re-exported here for the server's code."""

from __future__ import annotations

import uuid

from hybridmem_client.models import (
    Episode,
    Frozen,
    JsonDict,
    MemoryRecord,
    MemoryVersion,
    Role,
    ScoredSnippet,
    ScratchpadEntry,
    Tier,
    Transcript,
    TranscriptTurn,
)

__all__ = [
    "Episode",
    "Frozen",
    "HealthReport",
    "JsonDict",
    "MemoryRecord",
    "MemoryVersion",
    "ModelVersion",
    "Role",
    "ScoredSnippet",
    "ScratchpadEntry",
    "SparseVector",
    "Tier",
    "Transcript",
    "TranscriptTurn",
    "VectorHit",
    "VectorPoint",
]


class ModelVersion(Frozen):
    """Identity of an embedding model: vectors of two versions never share a collection."""

    name: str
    revision: str
    dimension: int
    backend: str = "torch"

    @property
    def key(self) -> str:
        """``{name}@{revision}``; the backend is folded into the revision when it changes the output."""
        return f"{self.name}@{self.revision}"

    @property
    def collection_suffix(self) -> str:
        """A Qdrant-safe collection name fragment for this version."""
        safe = "".join(c if c.isalnum() else "_" for c in self.name.lower()).strip("_")
        return f"{safe}_{self.revision[:12]}_{self.dimension}"


class SparseVector(Frozen):
    """A sparse vector: term ids (ascending) and their weights (BM25 term weights in the semantic tier)."""

    indices: list[int]
    values: list[float]


class VectorPoint(Frozen):
    """A point for the semantic tier: deterministic id, dense vector, BM25 sparse vector, payload.

    ``sparse`` is None for points that are not searched lexically (chunks of a longer record: the record's
    own point carries its terms) and for texts without a searchable term.
    """

    id: uuid.UUID
    vector: list[float]
    payload: JsonDict
    sparse: SparseVector | None = None


class VectorHit(Frozen):
    id: str
    score: float
    payload: JsonDict


class HealthReport(Frozen):
    """Per-store readiness: ``{"redis": "ok", "postgres": "unavailable: ...", ...}``."""

    stores: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.stores.values())

    @property
    def serving(self) -> bool:
        """Whether the app can answer at all: some store is reachable (a read falls back to the tiers that
        answer; a write needs Postgres and answers 503 while it is away)."""
        return any(v == "ok" for v in self.stores.values())
