"""Domain values: frozen pydantic models shared by every tier and the API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JsonDict = dict[str, Any]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"
    OBSERVATION = "observation"


class Tier(StrEnum):
    WORKING = "working"
    EPISODIC = "episodic"
    SEMANTIC = "semantic"


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


class Episode(Frozen):
    """One durable event in a session: a message, observation, action or scratchpad flush."""

    id: uuid.UUID
    tenant_id: str
    agent_id: str
    session_id: str
    partition: int
    role: Role
    kind: str
    content: str
    metadata: JsonDict = Field(default_factory=dict)
    created_at: datetime
    content_hash: str
    consolidated_at: datetime | None = None


class TranscriptTurn(Frozen):
    """One turn of a multi-party transcript (a negotiation, a meeting)."""

    speaker: str
    content: str
    created_at: datetime | None = None
    metadata: JsonDict = Field(default_factory=dict)


class Transcript(Frozen):
    id: uuid.UUID
    tenant_id: str
    agent_id: str
    session_id: str
    title: str
    participants: list[str]
    metadata: JsonDict = Field(default_factory=dict)
    created_at: datetime
    turns: list[TranscriptTurn] = Field(default_factory=list)
    episode_ids: list[uuid.UUID] = Field(default_factory=list)


class ScratchpadEntry(Frozen):
    """A keyed, TTL-bound value an agent keeps in working memory."""

    tenant_id: str
    agent_id: str
    key: str
    value: Any
    ttl_s: int | None = None
    updated_at: datetime


class MemoryRecord(Frozen):
    """A semantic memory: durable in Postgres, its vector in Qdrant."""

    id: uuid.UUID
    tenant_id: str
    agent_id: str
    session_id: str | None = None
    kind: str = "fact"
    content: str
    metadata: JsonDict = Field(default_factory=dict)
    source_ids: list[str] = Field(default_factory=list)
    model_version: str | None = None
    created_at: datetime
    updated_at: datetime


class ScoredSnippet(Frozen):
    """A retrieved piece of context with where it came from and why it ranked."""

    tier: Tier
    content: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict)
    source_ids: list[str] = Field(default_factory=list)
    kind: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    created_at: datetime | None = None
    token_count: int | None = None
    truncated: bool = False
    metadata: JsonDict = Field(default_factory=dict)


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
