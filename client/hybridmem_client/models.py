"""The API's wire types: what the hybridmem server stores and answers, and what a client sends.

The server and the client share these definitions (the server imports them from here), so a field
added on one side is on the other.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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
    superseded_by: uuid.UUID | None = Field(None, description="The episode or memory that superseded it")
    superseded_at: datetime | None = Field(None, description="From when it is superseded")


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
    valid_from: datetime | None = Field(None, description="Start of the validity interval (None: open)")
    valid_to: datetime | None = Field(None, description="End of the validity interval, exclusive")
    superseded_by: uuid.UUID | None = Field(None, description="The episode or memory that superseded it")
    superseded_at: datetime | None = Field(None, description="From when it is superseded")


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
    valid_from: datetime | None = None
    valid_to: datetime | None = None
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
    valid_from: datetime | None = Field(None, description="A memory's validity start, when it has one")
    valid_to: datetime | None = Field(
        None, description="A memory's validity end (exclusive), when it has one"
    )
    superseded_by: str | None = Field(
        None, description="Id of what superseded it (shown with include_superseded or an earlier as_of)"
    )
    superseded_at: datetime | None = None
    token_count: int | None = None
    truncated: bool = False
    metadata: JsonDict = Field(default_factory=dict)


# ---- inputs (request bodies) ---------------------------------------------------------------------

_ID = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
MAX_SUPERSEDES = 64


def _supersedes_field() -> Any:
    return Field(
        None,
        min_length=1,
        max_length=MAX_SUPERSEDES,
        description=(
            "Ids of earlier episodes or memories this write replaces (their ids or the client keys they "
            "were written with): they stay stored and auditable, but search and context leave them out"
        ),
    )


def tz_aware(name: str, v: datetime | None) -> datetime | None:
    """A time with a timezone, strictly inside years 1-9999 in UTC: what the stores keep and give back
    (Postgres clients read the very first and last instants as -infinity / infinity)."""
    if v is None:
        return v
    if v.tzinfo is None:
        raise ValueError(f"{name} must include a timezone (e.g. 2024-05-01T12:00:00Z)")
    try:
        utc = v.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        utc = datetime.min
    if utc in (datetime.min, datetime.max):
        raise ValueError(f"{name} must fall strictly within the years 1-9999 in UTC")
    return v


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
    supersedes: list[Annotated[str, _ID]] | None = _supersedes_field()

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return tz_aware("created_at", v)


class TranscriptTurnIn(_In):
    speaker: str = _ID
    content: str = Field(min_length=1)
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return tz_aware("created_at", v)


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
    supersedes: list[Annotated[str, _ID]] | None = _supersedes_field()
    valid_from: datetime | None = Field(None, description="From when it holds (default: when written)")
    valid_to: datetime | None = Field(None, description="Until when it holds, exclusive (default: open)")

    @field_validator("valid_from", "valid_to")
    @classmethod
    def _aware(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        return tz_aware(str(info.field_name), v)

    @model_validator(mode="after")
    def _interval(self) -> MemoryIn:
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be later than valid_from")
        return self


class MemoryPatch(_In):
    content: str | None = Field(None, min_length=1)
    kind: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    metadata: dict[str, Any] | None = None
    index: bool | None = Field(None, description="Turn indexing on or off (see MemoryIn.index)")
    valid_from: datetime | None = Field(None, description="New validity start (null clears it)")
    valid_to: datetime | None = Field(None, description="New validity end, exclusive (null clears it)")

    @field_validator("valid_from", "valid_to")
    @classmethod
    def _aware(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        return tz_aware(str(info.field_name), v)
