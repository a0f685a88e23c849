"""Write-side input models shared by the service façade and the HTTP API.

Types and shapes are checked by pydantic (→ 422); configurable limits by :func:`check_limits`
(→ 413/422 naming the field), before anything is written.
"""

from __future__ import annotations

import json
from typing import Any

from hybridmem_client.models import (
    EpisodeIn,
    MemoryIn,
    MemoryPatch,
    ScratchpadIn,
    TranscriptIn,
    TranscriptTurnIn,
)

from core.errors import InvalidInput, LimitExceeded
from core.settings import LimitSettings

__all__ = [
    "EpisodeIn",
    "MemoryIn",
    "MemoryPatch",
    "ScratchpadIn",
    "TranscriptIn",
    "TranscriptTurnIn",
    "check_batch",
    "check_content",
    "check_episode",
    "check_memory",
    "check_metadata",
    "check_ttl",
]


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
