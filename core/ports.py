"""The ports (Protocols) each tier implements. Fakes in tests implement the same ones.

One contract suite per port runs against every implementation (tests/contract/).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from core.models import (
    Episode,
    JsonDict,
    MemoryRecord,
    MemoryVersion,
    ModelVersion,
    ScratchpadEntry,
    SparseVector,
    Transcript,
    VectorHit,
    VectorPoint,
)
from core.retrieval.query import ContextQuery, SearchQuery
from core.retrieval.results import ContextResult, SearchResult


@dataclass(frozen=True, slots=True)
class BufferRead:
    """A session buffer read: the newest turns asked for (oldest first); ``full``: the buffer is known to
    hold the session's newest turns up to its cap (rebuilt from Postgres since it was last lost);
    ``length``: how many turns it holds."""

    episodes: list[Episode]
    full: bool
    length: int


class WorkingStore(Protocol):
    """Working tier (Redis): session buffers, scratchpads. Keys are tenant-scoped."""

    async def append_session(self, episodes: Sequence[Episode]) -> None:
        """Append episodes to their sessions' buffers (pipelined), cap the length, refresh TTL."""

    async def recent_session(self, *, tenant_id: str, session_id: str, limit: int) -> list[Episode]:
        """Newest ``limit`` episodes of a session buffer, oldest first."""

    async def read_session(self, *, tenant_id: str, session_id: str, limit: int) -> BufferRead:
        """The newest ``limit`` turns with the buffer's completeness and length (one round trip)."""

    async def fill_session(
        self, *, tenant_id: str, session_id: str, episodes: Sequence[Episode], expected_length: int
    ) -> bool:
        """Replace the buffer with a session's newest turns (from Postgres) and mark it full, unless it
        changed length since it was read; True when replaced."""

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None: ...

    async def remove_from_sessions(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int:
        """Drop the given episodes from any session buffer of the tenant (cascading deletes)."""

    async def put_scratchpad(
        self, *, tenant_id: str, agent_id: str, key: str, value: Any, ttl_s: int | None
    ) -> ScratchpadEntry: ...

    async def put_scratchpads(self, entries: Sequence[ScratchpadEntry]) -> None:
        """Bulk put in one pipeline."""

    async def get_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> ScratchpadEntry | None: ...

    async def delete_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> bool: ...

    async def list_scratchpads(
        self, *, tenant_id: str, agent_id: str, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[ScratchpadEntry], str | None]:
        """A page of entries and the next cursor (None at the end)."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""


class EpisodicStore(Protocol):
    """Episodic tier (Postgres): durable episodes, transcripts, memory records."""

    async def insert_episodes(self, episodes: Sequence[Episode]) -> list[uuid.UUID]:
        """Insert in one transaction; an id already stored is skipped. Returns ids newly inserted."""

    async def get_episode(self, *, tenant_id: str, episode_id: uuid.UUID) -> Episode | None: ...

    async def recent_episodes(
        self, *, tenant_id: str, session_id: str, limit: int, agent_id: str | None = None
    ) -> list[Episode]:
        """Newest ``limit`` episodes of a session, oldest first."""

    async def list_episodes(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[Episode]:
        """Keyset-paginated listing ordered by (created_at, id)."""

    async def delete_episodes(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int: ...

    async def insert_transcript(self, transcript: Transcript, episodes: Sequence[Episode]) -> bool:
        """Store a transcript and its turns as episodes, atomically; False if it already existed."""

    async def get_transcript(self, *, tenant_id: str, transcript_id: uuid.UUID) -> Transcript | None: ...

    async def upsert_memories(
        self, records: Sequence[MemoryRecord], *, changed_by: str | None = None
    ) -> None:
        """Insert or update by id; each written memory's new state becomes its next version."""

    async def get_memory(self, *, tenant_id: str, memory_id: uuid.UUID) -> MemoryRecord | None: ...

    async def get_memories(
        self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID]
    ) -> list[MemoryRecord]: ...

    async def list_memories(
        self,
        *,
        tenant_id: str,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[MemoryRecord]: ...

    async def delete_memories(
        self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID], changed_by: str | None = None
    ) -> int:
        """Delete; each deleted memory is recorded as a last ``delete`` version. Returns how many."""

    async def memory_history(self, *, tenant_id: str, memory_id: uuid.UUID) -> list[MemoryVersion]:
        """Every version of the memory, oldest first ([] when none was recorded)."""

    async def find_records(
        self, *, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Literal["episode", "memory"]]:
        """Which of ``ids`` are the tenant's episodes or memories (the others are left out)."""

    async def supersede(
        self, *, tenant_id: str, links: Sequence[tuple[uuid.UUID, uuid.UUID, datetime]]
    ) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
        """Mark each (target, by, at): the tenant's episode or memory ``target`` is superseded by ``by`` from
        ``at``; a row's earliest supersession stands. Returns the links applied."""

    async def ping(self) -> None: ...


class VectorIndex(Protocol):
    """Semantic tier: one collection per model version behind an alias."""

    async def ensure_collection(self, version: ModelVersion, *, make_live: bool = True) -> str:
        """Create the version's collection (+ payload indexes) if missing; point the alias at it."""

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None: ...

    async def search(
        self,
        vector: Sequence[float],
        *,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:
        """Nearest points of the tenant.

        ``filters`` keys: agent_id, session_id, kind, created_after, created_before.
        """

    async def search_hybrid(
        self,
        vector: Sequence[float] | None,
        terms: SparseVector | None,
        *,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> tuple[list[VectorHit], list[VectorHit]]:
        """The tenant's ``k`` nearest points to ``vector`` and its ``k`` best BM25 matches for ``terms``,
        from one engine call; IDF over the tenant's points only. A list is empty when its query is None
        (or, lexical, when the collection has no sparse vectors)."""

    async def lexical_ready(self, collection: str | None = None) -> bool:
        """Whether the collection (the alias's by default) holds BM25 sparse vectors for lexical search."""

    async def update_terms(
        self, terms: dict[uuid.UUID, SparseVector], *, collection: str | None = None
    ) -> int:
        """Replace the BM25 vectors of those of the given points that exist; returns how many."""

    async def delete_by_source(self, *, tenant_id: str, source_ids: Sequence[str]) -> None:
        """Delete every point whose payload ``source_ids`` contains any of the given ids."""

    async def mark_superseded(self, *, tenant_id: str, marks: Sequence[tuple[str, str, float]]) -> None:
        """For each (source id, superseding id, epoch seconds): every point of the tenant derived from the
        source (its own, its chunks, summaries and memories that cite it), in every model version's
        collection, is marked superseded from that time (payload ``superseded_at_ts``, ``superseded_by``)."""

    async def delete_ids(self, ids: Sequence[uuid.UUID], *, collection: str | None = None) -> None: ...

    async def count(self, *, tenant_id: str | None = None, collection: str | None = None) -> int: ...

    async def live_version(self) -> str | None:
        """The model version key of the collection the alias points at (None: no collection yet)."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Retriever(Protocol):
    """The read path: hybrid search and token-budgeted context over the three tiers.

    Implemented in process by :class:`core.retrieval.hybrid.HybridRetriever` and over the Serve handle by
    ``deployments.retriever.HandleRetriever``; one contract suite runs against both
    (tests/contract/test_retriever.py). Defaults the query leaves as None come from the serving side's
    ``retrieval`` settings.
    """

    async def search(self, query: SearchQuery) -> SearchResult: ...

    async def context(self, query: ContextQuery) -> ContextResult: ...
