"""The API's wire types: what the hybridmem server stores and answers, and what a client sends.

The server and the client share these definitions (the server imports them from here), so a field
added on one side is on the other.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    indexed: bool = Field(True, description="False: stored and listed, never embedded or searched")


class MemoryVersion(Frozen):
    """One state a memory was written in: ``op`` create, update or delete (the deleted state), numbered
    from 1, with when and by which API key (its name)."""

    memory_id: uuid.UUID
    version: int
    op: Literal["create", "update", "delete"]
    agent_id: str
    session_id: str | None = None
    kind: str
    content: str
    metadata: JsonDict = Field(default_factory=dict)
    source_ids: list[str] = Field(default_factory=list)
    indexed: bool = True
    changed_at: datetime
    changed_by: str | None = None


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
    updated_at: datetime | None = Field(None, description="A memory's last update (None for other hits)")
    token_count: int | None = None
    truncated: bool = False
    metadata: JsonDict = Field(default_factory=dict)


# ---- inputs (request bodies) ---------------------------------------------------------------------

_ID = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpisodeIn(_In):
    """One episode to store. ``id`` is the client's idempotency key: replays store it once."""

    id: str | None = Field(None, min_length=1, max_length=256, description="Client idempotency key")
    agent_id: str = _ID
    session_id: str = _ID
    role: Role = Role.USER
    kind: str = Field("message", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    content: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = Field(None, description="Event time (default: now, UTC)")

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("created_at must include a timezone (e.g. 2024-05-01T12:00:00Z)")
        return v


class TranscriptTurnIn(_In):
    speaker: str = _ID
    content: str = Field(min_length=1)
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class TranscriptIn(_In):
    """A multi-party transcript (negotiation, meeting); each turn also becomes an episode."""

    id: str | None = Field(None, min_length=1, max_length=256)
    agent_id: str = _ID
    session_id: str = _ID
    title: str = Field("", max_length=512)
    participants: list[str] = Field(min_length=1, max_length=64)
    turns: list[TranscriptTurnIn] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScratchpadIn(_In):
    value: Any = Field(description="Any JSON value")
    ttl_s: int | None = Field(None, description="Seconds to live (default from settings)")


class MemoryIn(_In):
    id: str | None = Field(None, min_length=1, max_length=256, description="Client idempotency key")
    agent_id: str = _ID
    session_id: str | None = Field(None, min_length=1, max_length=256)
    kind: str = Field("fact", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    content: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_ids: list[str] = Field(default_factory=list, max_length=256)
    index: bool = Field(
        True,
        description="False: the memory is stored, read and listed, but never embedded, so no search finds it",
    )


class MemoryPatch(_In):
    content: str | None = Field(None, min_length=1)
    kind: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    metadata: dict[str, Any] | None = None
    index: bool | None = Field(None, description="Turn indexing on or off (see MemoryIn.index)")
