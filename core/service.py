"""HybridMemoryService: the façade every entry point (HTTP, jobs, CLI) uses over the three tiers.

Durability contract: an episode, transcript or memory is acknowledged only once it is committed in
Postgres; the Redis session buffer is a best-effort cache of recent turns (rebuilt from Postgres on a
miss). Scratchpads live in Redis only, with a TTL, and are acknowledged once Redis has them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from core import supersedes
from core.embedding.types import TextEmbedder
from core.errors import InvalidInput, NotFound, StoreUnavailable
from core.ids import content_hash, deterministic_id, hash_tenant, partition_of
from core.memory_index import write_memories
from core.models import (
    Episode,
    HealthReport,
    MemoryRecord,
    MemoryVersion,
    ScratchpadEntry,
    Transcript,
    TranscriptTurn,
)
from core.ports import BufferRead, EpisodicStore, VectorIndex, WorkingStore
from core.retrieval.bm25_sparse import bm25_sparse
from core.schemas import (
    EpisodeIn,
    MemoryIn,
    MemoryPatch,
    TranscriptIn,
    check_batch,
    check_content,
    check_episode,
    check_memory,
    check_metadata,
    check_ttl,
)
from core.settings import Settings

HEALTH_TIMEOUT_S = 5.0  # a store that has not answered a readiness ping by then is reported unavailable

log = logging.getLogger(__name__)

ReadPreference = Literal["redis_first", "postgres_only"]


@dataclass(frozen=True)
class StoredEpisodes:
    episodes: list[Episode]
    inserted: int  # newly stored; the rest were replays of ids already stored

    @property
    def duplicates(self) -> int:
        return len(self.episodes) - self.inserted


@dataclass(frozen=True)
class RecentContext:
    episodes: list[Episode]
    source: Literal["redis", "postgres"]
    degraded: list[str]


class HybridMemoryService:
    """Writes, reads and deletes across working (Redis), episodic (Postgres) and semantic (Qdrant) tiers."""

    def __init__(
        self,
        *,
        working: WorkingStore,
        episodic: EpisodicStore,
        settings: Settings,
        vectors: VectorIndex | None = None,
        embedder: TextEmbedder | None = None,
    ) -> None:
        self._working = working
        self._episodic = episodic
        self._vectors = vectors
        self._embedder = embedder
        self._settings = settings
        self._limits = settings.limits
        self._lexical = bm25_sparse(settings.retrieval)

    # ---- episodes -------------------------------------------------------------------------------

    def build_episode(self, tenant_id: str, item: EpisodeIn, *, now: datetime | None = None) -> Episode:
        source = item.id or uuid.uuid4().hex
        created = item.created_at or now or datetime.now(UTC)
        return Episode(
            id=deterministic_id(tenant_id, "episode", source),
            tenant_id=tenant_id,
            agent_id=item.agent_id,
            session_id=item.session_id,
            partition=partition_of(tenant_id, item.session_id, self._settings.consolidation.n_partitions),
            role=item.role,
            kind=item.kind,
            content=item.content,
            metadata=item.metadata,
            created_at=created,
            content_hash=content_hash(item.content),
        )

    async def store_episode(self, tenant_id: str, item: EpisodeIn) -> Episode:
        stored = await self.store_episodes(tenant_id, [item], field="episode")
        return stored.episodes[0]

    async def store_episodes(
        self, tenant_id: str, items: Sequence[EpisodeIn], *, field: str = "episodes"
    ) -> StoredEpisodes:
        """Validate all, then commit all in one Postgres transaction (all or nothing), then buffer."""
        check_batch(field, len(items), self._limits)
        for i, item in enumerate(items):
            check_episode(f"{field}[{i}]" if field == "episodes" else field, item, self._limits)
        now = datetime.now(UTC)
        episodes = [self.build_episode(tenant_id, item, now=now) for item in items]
        links = await supersedes.resolve(
            self._episodic, tenant_id, field=field, indexed=field == "episodes", kind="episode",
            ids=[e.id for e in episodes], refs=[i.supersedes for i in items],
            times=[e.created_at for e in episodes],
        )  # fmt: skip
        inserted = await self._episodic.insert_episodes(episodes)
        fresh = set(inserted)
        await self._buffer([e for e in episodes if e.id in fresh])
        await self._supersede(tenant_id, links)
        log.info(
            "episodes stored",
            extra={
                "store": "postgres",
                "operation": "insert_episodes",
                "tenant": hash_tenant(tenant_id),
                "count": len(episodes),
                "inserted": len(inserted),
            },
        )
        return StoredEpisodes(episodes=episodes, inserted=len(inserted))

    async def _supersede(self, tenant_id: str, links: Sequence[supersedes.Link]) -> None:
        await supersedes.apply(
            links, tenant_id=tenant_id, episodic=self._episodic, vectors=self._vectors, working=self._working
        )

    async def _buffer(self, episodes: Sequence[Episode]) -> None:
        if not episodes:
            return
        try:
            await self._working.append_session(episodes)
        except StoreUnavailable:
            # Postgres already holds them (the ack); the buffer is rebuilt from Postgres on read.
            log.warning("session buffer write skipped: redis unavailable", extra={"store": "redis"})

    async def get_episode(self, tenant_id: str, episode_id: uuid.UUID) -> Episode:
        ep = await self._episodic.get_episode(tenant_id=tenant_id, episode_id=episode_id)
        if ep is None:
            raise NotFound("episode", str(episode_id))
        return ep

    async def list_episodes(
        self,
        tenant_id: str,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[Episode]:
        return await self._episodic.list_episodes(
            tenant_id=tenant_id, session_id=session_id, agent_id=agent_id, after=after, limit=limit
        )

    async def delete_episode(self, tenant_id: str, episode_id: uuid.UUID) -> None:
        """Cascade: Postgres row, Redis buffer entry, every Qdrant point built from it."""
        removed = await self._episodic.delete_episodes(tenant_id=tenant_id, episode_ids=[episode_id])
        if not removed:
            raise NotFound("episode", str(episode_id))
        try:
            await self._working.remove_from_sessions(tenant_id=tenant_id, episode_ids=[episode_id])
        except StoreUnavailable:
            log.warning("buffer cleanup skipped: redis unavailable", extra={"store": "redis"})
        if self._vectors is not None:
            await self._vectors.delete_by_source(tenant_id=tenant_id, source_ids=[str(episode_id)])

    async def store_transcript(self, tenant_id: str, item: TranscriptIn) -> tuple[Transcript, bool]:
        """Store a transcript and its turns (as episodes) atomically. Returns (transcript, created)."""
        check_batch("turns", len(item.turns), self._limits)
        check_metadata("metadata", item.metadata, self._limits)
        for i, turn in enumerate(item.turns):
            check_content(f"turns[{i}].content", turn.content, self._limits)
            check_metadata(f"turns[{i}].metadata", turn.metadata, self._limits)
            if turn.speaker not in item.participants:
                raise InvalidInput(f"turns[{i}].speaker", f"{turn.speaker!r} is not one of the participants")
        source = item.id or uuid.uuid4().hex
        tid = deterministic_id(tenant_id, "transcript", source)
        now = datetime.now(UTC)
        episodes = [
            self.build_episode(
                tenant_id,
                EpisodeIn(
                    id=f"transcript:{tid}:{i}",
                    agent_id=item.agent_id,
                    session_id=item.session_id,
                    kind="transcript_turn",
                    content=turn.content,
                    metadata={**turn.metadata, "speaker": turn.speaker, "transcript_id": str(tid), "turn": i},
                    created_at=turn.created_at,
                ),
                now=now,
            )
            for i, turn in enumerate(item.turns)
        ]
        transcript = Transcript(
            id=tid,
            tenant_id=tenant_id,
            agent_id=item.agent_id,
            session_id=item.session_id,
            title=item.title,
            participants=item.participants,
            metadata=item.metadata,
            created_at=now,
            turns=[TranscriptTurn(**t.model_dump()) for t in item.turns],
            episode_ids=[e.id for e in episodes],
        )
        created = await self._episodic.insert_transcript(transcript, episodes)
        if created:
            await self._buffer(episodes)
        return transcript, created

    async def get_transcript(self, tenant_id: str, transcript_id: uuid.UUID) -> Transcript:
        t = await self._episodic.get_transcript(tenant_id=tenant_id, transcript_id=transcript_id)
        if t is None:
            raise NotFound("transcript", str(transcript_id))
        return t

    async def fetch_recent_context(
        self,
        tenant_id: str,
        session_id: str,
        *,
        limit: int = 20,
        read_preference: ReadPreference = "redis_first",
    ) -> RecentContext:
        """Recent turns of a session, oldest first: Redis first, Postgres when Redis misses or is down.

        The buffer answers when it holds ``limit`` turns, or fewer but is known to hold them all (it was
        rebuilt from Postgres). Otherwise (a new session, or Redis restarted empty: its buffer holds only
        what came after) Postgres answers and the buffer is rebuilt from it, once."""
        degraded: list[str] = []
        cap = self._settings.redis.session_buffer_max_len
        read: BufferRead | None = None
        if read_preference == "redis_first":
            try:
                read = await self._working.read_session(
                    tenant_id=tenant_id, session_id=session_id, limit=limit
                )
                if read.episodes and (len(read.episodes) >= limit or (read.full and limit <= cap)):
                    return RecentContext(episodes=read.episodes, source="redis", degraded=[])
            except StoreUnavailable:
                degraded.append("working")
        rows = await self._episodic.recent_episodes(
            tenant_id=tenant_id, session_id=session_id, limit=max(limit, cap)
        )
        if read is not None:
            try:
                await self._working.fill_session(
                    tenant_id=tenant_id, session_id=session_id, episodes=rows, expected_length=read.length
                )
            except StoreUnavailable:
                log.warning("session buffer rebuild skipped: redis unavailable", extra={"store": "redis"})
        return RecentContext(
            episodes=rows[-limit:] if limit > 0 else [], source="postgres", degraded=degraded
        )

    # ---- scratchpads ----------------------------------------------------------------------------

    async def put_scratchpad(
        self, tenant_id: str, agent_id: str, key: str, value: Any, ttl_s: int | None = None
    ) -> ScratchpadEntry:
        check_ttl("ttl_s", ttl_s, self._limits)
        check_metadata("value", {"v": value}, self._limits)
        ttl = ttl_s if ttl_s is not None else self._settings.redis.scratchpad_default_ttl_s
        return await self._working.put_scratchpad(
            tenant_id=tenant_id, agent_id=agent_id, key=key, value=value, ttl_s=ttl
        )

    async def get_scratchpad(self, tenant_id: str, agent_id: str, key: str) -> ScratchpadEntry:
        entry = await self._working.get_scratchpad(tenant_id=tenant_id, agent_id=agent_id, key=key)
        if entry is None:
            raise NotFound("scratchpad", key)
        return entry

    async def delete_scratchpad(self, tenant_id: str, agent_id: str, key: str) -> None:
        if not await self._working.delete_scratchpad(tenant_id=tenant_id, agent_id=agent_id, key=key):
            raise NotFound("scratchpad", key)

    async def list_scratchpads(
        self, tenant_id: str, agent_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[ScratchpadEntry], str | None]:
        return await self._working.list_scratchpads(
            tenant_id=tenant_id, agent_id=agent_id, cursor=cursor, limit=limit
        )

    # ---- semantic memories ----------------------------------------------------------------------

    async def upsert_memory(
        self, tenant_id: str, item: MemoryIn, *, changed_by: str | None = None
    ) -> MemoryRecord:
        return (await self.upsert_memories(tenant_id, [item], field="memory", changed_by=changed_by))[0]

    async def upsert_memories(
        self,
        tenant_id: str,
        items: Sequence[MemoryIn],
        *,
        field: str = "memories",
        changed_by: str | None = None,
    ) -> list[MemoryRecord]:
        """Durable in Postgres first (the ack), then embedded and indexed; replays overwrite in place. Each
        write is also a new version of the memory (``memory_history``), with ``changed_by`` (a key name)."""
        check_batch(field, len(items), self._limits)
        for i, item in enumerate(items):
            check_memory(f"{field}[{i}]" if field == "memories" else field, item, self._limits)
        now = datetime.now(UTC)
        ids = [deterministic_id(tenant_id, "memory", item.id or uuid.uuid4().hex) for item in items]
        known = {m.id: m for m in await self._episodic.get_memories(tenant_id=tenant_id, memory_ids=ids)}
        links = await supersedes.resolve(
            self._episodic, tenant_id, field=field, indexed=field == "memories", kind="memory", ids=ids,
            refs=[i.supersedes for i in items], times=[i.valid_from or now for i in items],
        )  # fmt: skip
        records = [
            MemoryRecord(
                id=mid,
                tenant_id=tenant_id,
                agent_id=item.agent_id,
                session_id=item.session_id,
                kind=item.kind,
                content=item.content,
                metadata=item.metadata,
                source_ids=item.source_ids,
                created_at=known[mid].created_at if mid in known else now,
                updated_at=now,
                indexed=item.index,
                valid_from=item.valid_from,
                valid_to=item.valid_to,
                # a rewrite keeps what superseded the memory (its points must stay marked)
                superseded_by=known[mid].superseded_by if mid in known else None,
                superseded_at=known[mid].superseded_at if mid in known else None,
            )
            for mid, item in zip(ids, items, strict=True)
        ]
        was_indexed = {mid for mid, m in known.items() if m.indexed}
        written = await self._index_memories(records, was_indexed=was_indexed, changed_by=changed_by)
        await self._supersede(tenant_id, links)
        return written

    async def _index_memories(
        self, records: list[MemoryRecord], *, was_indexed: set[uuid.UUID], changed_by: str | None
    ) -> list[MemoryRecord]:
        return await write_memories(
            records, was_indexed=was_indexed, changed_by=changed_by, episodic=self._episodic,
            vectors=self._vectors, embedder=self._embedder, lexical=self._lexical,
        )  # fmt: skip

    async def patch_memory(
        self, tenant_id: str, memory_id: uuid.UUID, patch: MemoryPatch, *, changed_by: str | None = None
    ) -> MemoryRecord:
        check_memory("memory", patch, self._limits)
        current = await self.get_memory(tenant_id, memory_id)
        changes = patch.model_dump(exclude_none=True)
        if "index" in changes:
            changes["indexed"] = changes.pop("index")
        for name in ("valid_from", "valid_to"):  # an explicit null clears the bound
            if name in patch.model_fields_set:
                changes[name] = getattr(patch, name)
        updated = current.model_copy(update={**changes, "updated_at": datetime.now(UTC)})
        if updated.valid_from and updated.valid_to and updated.valid_to <= updated.valid_from:
            raise InvalidInput("valid_to", "must be later than valid_from")
        was_indexed = {current.id} if current.indexed else set()
        return (await self._index_memories([updated], was_indexed=was_indexed, changed_by=changed_by))[0]

    async def get_memory(self, tenant_id: str, memory_id: uuid.UUID) -> MemoryRecord:
        rec = await self._episodic.get_memory(tenant_id=tenant_id, memory_id=memory_id)
        if rec is None:
            raise NotFound("memory", str(memory_id))
        return rec

    async def list_memories(
        self,
        tenant_id: str,
        *,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[MemoryRecord]:
        return await self._episodic.list_memories(
            tenant_id=tenant_id, agent_id=agent_id, after=after, limit=limit
        )

    async def memory_history(self, tenant_id: str, memory_id: uuid.UUID) -> list[MemoryVersion]:
        """Every version of a memory, oldest first, a delete included; NotFound when the tenant has
        neither the memory nor a recorded version of it."""
        versions = await self._episodic.memory_history(tenant_id=tenant_id, memory_id=memory_id)
        if not versions:
            await self.get_memory(tenant_id, memory_id)  # NotFound, or a memory written before versions
        return versions

    async def delete_memory(
        self, tenant_id: str, memory_id: uuid.UUID, *, changed_by: str | None = None
    ) -> None:
        """Cascade across tiers: the Postgres record and every vector of it, in every model version. The
        deleted state stays in the memory's history as its last version."""
        removed = await self._episodic.delete_memories(
            tenant_id=tenant_id, memory_ids=[memory_id], changed_by=changed_by
        )
        if not removed:
            raise NotFound("memory", str(memory_id))
        if self._vectors is not None:
            await self._vectors.delete_by_source(tenant_id=tenant_id, source_ids=[str(memory_id)])

    # ---- health ---------------------------------------------------------------------------------

    async def health(self) -> HealthReport:
        """Every store pinged at once, each given ``HEALTH_TIMEOUT_S``: a store that hangs (a stopped
        server whose connections have not failed yet) is reported as such, and never delays the others."""
        checks: list[tuple[str, Any]] = [("redis", self._working), ("postgres", self._episodic)]
        if self._vectors is not None:
            checks.append(("qdrant", self._vectors))

        async def check(store: Any) -> str:
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT_S):
                    await store.ping()
            except StoreUnavailable as exc:
                return f"unavailable: {exc.message}"
            except TimeoutError:
                return f"unavailable: no answer within {HEALTH_TIMEOUT_S:g} s"
            return "ok"

        states = await asyncio.gather(*(check(store) for _, store in checks))
        return HealthReport(stores={name: state for (name, _), state in zip(checks, states, strict=True)})
