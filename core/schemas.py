"""Write-side input models shared by the service façade and the HTTP API.

Types and shapes are checked by pydantic (→ 422); configurable limits by :func:`check_limits`
(→ 413/422 naming the field), before anything is written.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidInput, LimitExceeded
from core.models import Role
from core.settings import LimitSettings

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


class MemoryPatch(_In):
    content: str | None = Field(None, min_length=1)
    kind: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    metadata: dict[str, Any] | None = None


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def check_metadata(field: str, metadata: dict[str, Any], limits: LimitSettings) -> None:
    dumped = json.dumps(metadata, separators=(",", ":"), default=str)
    if "\\u0000" in dumped:
        raise InvalidInput(field, "must not contain NUL characters")
    size = len(dumped.encode())
    if size > limits.max_metadata_bytes:
        raise LimitExceeded(field, limits.max_metadata_bytes, size, "bytes")
    depth = _depth(metadata)
    if depth > limits.max_metadata_depth:
        raise LimitExceeded(field, limits.max_metadata_depth, depth, "levels")


def check_content(field: str, content: str, limits: LimitSettings) -> None:
    if len(content) > limits.max_content_chars:
        raise LimitExceeded(field, limits.max_content_chars, len(content), "chars")
    if "\x00" in content:
        raise InvalidInput(field, "must not contain NUL characters")


def check_batch(field: str, n: int, limits: LimitSettings) -> None:
    if n == 0:
        raise InvalidInput(field, "must not be empty")
    if n > limits.max_batch_items:
        raise LimitExceeded(field, limits.max_batch_items, n, "items")


def check_ttl(field: str, ttl_s: int | None, limits: LimitSettings) -> None:
    if ttl_s is None:
        return
    if ttl_s < limits.min_ttl_s or ttl_s > limits.max_ttl_s:
        raise InvalidInput(field, f"must be between {limits.min_ttl_s} and {limits.max_ttl_s} seconds")


def check_episode(prefix: str, ep: EpisodeIn, limits: LimitSettings) -> None:
    check_content(f"{prefix}.content", ep.content, limits)
    check_metadata(f"{prefix}.metadata", ep.metadata, limits)


def check_memory(prefix: str, mem: MemoryIn | MemoryPatch, limits: LimitSettings) -> None:
    if mem.content is not None:
        check_content(f"{prefix}.content", mem.content, limits)
    if mem.metadata is not None:
        check_metadata(f"{prefix}.metadata", mem.metadata, limits)
