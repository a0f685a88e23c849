"""Typed ids and the deterministic-id / partition contracts shared by every tier."""

from __future__ import annotations

import hashlib
import uuid
from typing import NewType

from hybridmem_client.ids import HYBRIDMEM_NAMESPACE, deterministic_id

__all__ = [
    "HYBRIDMEM_NAMESPACE",
    "AgentId",
    "EpisodeId",
    "MemoryId",
    "RunId",
    "SessionId",
    "TenantId",
    "TranscriptId",
    "content_hash",
    "deterministic_id",
    "hash_tenant",
    "partition_of",
    "stable_hash",
]

TenantId = NewType("TenantId", str)
AgentId = NewType("AgentId", str)
SessionId = NewType("SessionId", str)
EpisodeId = NewType("EpisodeId", uuid.UUID)
MemoryId = NewType("MemoryId", uuid.UUID)
TranscriptId = NewType("TranscriptId", uuid.UUID)
RunId = NewType("RunId", uuid.UUID)


def stable_hash(*parts: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def partition_of(tenant_id: str, session_id: str, n_partitions: int) -> int:
    """``stable_hash(tenant_id, session_id) % N``: every episode of a session lands in one partition."""
    return stable_hash(tenant_id, session_id) % n_partitions


def content_hash(text: str) -> str:
    """Hex SHA-256 of the UTF-8 content; used for dedupe and the embedding cache key."""
    return hashlib.sha256(text.encode()).hexdigest()


def hash_tenant(tenant_id: str) -> str:
    """Short, non-reversible tenant tag for logs (never log the raw tenant or key)."""
    return hashlib.blake2b(tenant_id.encode(), digest_size=6).hexdigest()
