"""In-memory fakes of the store ports (core.ports) for unit tests and the contract suites.

They follow the same semantics as the real adapters (the contract suites in tests/contract/ prove it):
tenant-scoped, capped session buffers, scratchpads with TTL, idempotent inserts, keyset pagination.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from core.errors import InvalidInput, StoreUnavailable
from core.models import Episode, MemoryRecord, MemoryVersion, ScratchpadEntry, Transcript
from core.ports import BufferRead

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "you",
    }
)


def _terms(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOPWORDS]


class InMemoryWorkingStore:
    """Working tier in a dict; TTLs follow ``time.monotonic``. ``available=False`` simulates an outage."""

    def __init__(self, *, buffer_max_len: int = 200, buffer_ttl_s: int = 7 * 24 * 3600) -> None:
        self.buffer_max_len = buffer_max_len
        self.buffer_ttl_s = buffer_ttl_s
        self.available = True
        self._buffers: dict[tuple[str, str], list[Episode]] = {}
        self._buffer_expiry: dict[tuple[str, str], float] = {}
        self._partitions: dict[tuple[str, str], int] = {}
        self._pads: dict[tuple[str, str, str], tuple[ScratchpadEntry, float | None]] = {}
        self._full: set[tuple[str, str]] = set()

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("redis", "fake outage")

    def _live_buffer(self, key: tuple[str, str]) -> list[Episode] | None:
        expiry = self._buffer_expiry.get(key)
        if expiry is not None and expiry <= time.monotonic():
            self._full.discard(key)
            self._buffers.pop(key, None)
            self._buffer_expiry.pop(key, None)
            self._partitions.pop(key, None)
        return self._buffers.get(key)

    async def append_session(self, episodes: Sequence[Episode]) -> None:
        self._check()
        for ep in episodes:
            key = (ep.tenant_id, ep.session_id)
            buf = self._live_buffer(key)
            if buf is None:
                buf = self._buffers[key] = []
            buf.append(ep)
            del buf[: max(0, len(buf) - self.buffer_max_len)]
            self._buffer_expiry[key] = time.monotonic() + self.buffer_ttl_s
            self._partitions[key] = ep.partition

    async def recent_session(self, *, tenant_id: str, session_id: str, limit: int) -> list[Episode]:
        self._check()
        buf = self._live_buffer((tenant_id, session_id)) or []
        return list(buf[-limit:]) if limit > 0 else []

    async def read_session(self, *, tenant_id: str, session_id: str, limit: int) -> BufferRead:
        self._check()
        key = (tenant_id, session_id)
        buf = self._live_buffer(key) or []
        return BufferRead(list(buf[-limit:]) if limit > 0 else [], key in self._full, len(buf))

    async def fill_session(
        self, *, tenant_id: str, session_id: str, episodes: Sequence[Episode], expected_length: int
    ) -> bool:
        self._check()
        key = (tenant_id, session_id)
        if len(self._live_buffer(key) or []) != expected_length:
            return False
        self._buffers[key] = list(episodes[-self.buffer_max_len :])
        self._buffer_expiry[key] = time.monotonic() + self.buffer_ttl_s
        self._full.add(key)
        return True

    def lose_everything(self) -> None:
        """What a Redis restarted empty looks like."""
        self._buffers.clear()
        self._buffer_expiry.clear()
        self._partitions.clear()
        self._full.clear()

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        self._check()
        key = (tenant_id, session_id)
        self._full.discard(key)
        self._buffers.pop(key, None)
        self._buffer_expiry.pop(key, None)
        self._partitions.pop(key, None)

    async def remove_from_sessions(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int:
        self._check()
        wanted = set(episode_ids)
        removed = 0
        for (tenant, _session), buf in list(self._buffers.items()):
            if tenant != tenant_id:
                continue
            keep = [ep for ep in buf if ep.id not in wanted]
            removed += len(buf) - len(keep)
            buf[:] = keep
        return removed

    async def sessions_in_partition(self, partition: int) -> list[tuple[str, str]]:
        self._check()
        return sorted(
            key
            for key, part in list(self._partitions.items())
            if part == partition and self._live_buffer(key) is not None
        )

    async def put_scratchpad(
        self, *, tenant_id: str, agent_id: str, key: str, value: Any, ttl_s: int | None
    ) -> ScratchpadEntry:
        entry = ScratchpadEntry(
            tenant_id=tenant_id,
            agent_id=agent_id,
            key=key,
            value=value,
            ttl_s=ttl_s,
            updated_at=datetime.now(UTC),
        )
        await self.put_scratchpads([entry])
        return entry

    async def put_scratchpads(self, entries: Sequence[ScratchpadEntry]) -> None:
        self._check()
        if any(e.ttl_s is not None and e.ttl_s < 1 for e in entries):
            raise InvalidInput("ttl_s", "must be at least 1 second (or null for no expiry)")
        now = time.monotonic()
        for e in entries:
            expiry = now + e.ttl_s if e.ttl_s is not None else None
            self._pads[(e.tenant_id, e.agent_id, e.key)] = (e, expiry)

    def _live_pad(self, k: tuple[str, str, str]) -> ScratchpadEntry | None:
        found = self._pads.get(k)
        if found is None:
            return None
        entry, expiry = found
        if expiry is not None and expiry <= time.monotonic():
            del self._pads[k]
            return None
        return entry

    async def get_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> ScratchpadEntry | None:
        self._check()
        return self._live_pad((tenant_id, agent_id, key))

    async def delete_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> bool:
        self._check()
        existed = self._live_pad((tenant_id, agent_id, key)) is not None
        self._pads.pop((tenant_id, agent_id, key), None)
        return existed

    async def list_scratchpads(
        self, *, tenant_id: str, agent_id: str, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[ScratchpadEntry], str | None]:
        self._check()
        keys = sorted(k[2].encode() for k in list(self._pads) if k[0] == tenant_id and k[1] == agent_id)
        live = [
            entry
            for raw in keys
            if (cursor is None or raw > cursor.encode())
            and (entry := self._live_pad((tenant_id, agent_id, raw.decode()))) is not None
        ]
        page = live[:limit]
        nxt = page[-1].key if len(live) > limit and page else None
        return page, nxt

    async def ping(self) -> None:
        self._check()


class InMemoryEpisodicStore:
    """Episodic tier in dicts; ``search_text`` ranks by query-term frequency (a stand-in for Postgres FTS)."""

    def __init__(self) -> None:
        self.available = True
        self.episodes: dict[uuid.UUID, Episode] = {}
        self.transcripts: dict[uuid.UUID, Transcript] = {}
        self.memories: dict[uuid.UUID, MemoryRecord] = {}
        self.versions: dict[tuple[str, uuid.UUID], list[MemoryVersion]] = {}

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("postgres", "fake outage")

    async def insert_episodes(self, episodes: Sequence[Episode]) -> list[uuid.UUID]:
        self._check()
        new: list[uuid.UUID] = []
        for ep in episodes:
            if ep.id not in self.episodes:
                self.episodes[ep.id] = ep
                new.append(ep.id)
        return new

    async def get_episode(self, *, tenant_id: str, episode_id: uuid.UUID) -> Episode | None:
        self._check()
        ep = self.episodes.get(episode_id)
        return ep if ep is not None and ep.tenant_id == tenant_id else None

    async def recent_episodes(
        self, *, tenant_id: str, session_id: str, limit: int, agent_id: str | None = None
    ) -> list[Episode]:
        self._check()
        found = sorted(
            (
                ep
                for ep in self.episodes.values()
                if ep.tenant_id == tenant_id
                and ep.session_id == session_id
                and (agent_id is None or ep.agent_id == agent_id)
            ),
            key=lambda ep: (ep.created_at, ep.id),
        )
        return found[-limit:] if limit > 0 else []

    async def list_episodes(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[Episode]:
        self._check()
        found = sorted(
            (
                ep
                for ep in self.episodes.values()
                if ep.tenant_id == tenant_id
                and (session_id is None or ep.session_id == session_id)
                and (agent_id is None or ep.agent_id == agent_id)
                and (after is None or (ep.created_at, ep.id) > after)
            ),
            key=lambda ep: (ep.created_at, ep.id),
        )
        return found[:limit]

    async def delete_episodes(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int:
        self._check()
        gone = 0
        for eid in set(episode_ids):
            ep = self.episodes.get(eid)
            if ep is not None and ep.tenant_id == tenant_id:
                del self.episodes[eid]
                gone += 1
        return gone

    async def insert_transcript(self, transcript: Transcript, episodes: Sequence[Episode]) -> bool:
        self._check()
        if transcript.id in self.transcripts:
            return False
        self.transcripts[transcript.id] = transcript
        await self.insert_episodes(episodes)
        return True

    async def get_transcript(self, *, tenant_id: str, transcript_id: uuid.UUID) -> Transcript | None:
        self._check()
        t = self.transcripts.get(transcript_id)
        return t if t is not None and t.tenant_id == tenant_id else None

    async def upsert_memories(
        self, records: Sequence[MemoryRecord], *, changed_by: str | None = None
    ) -> None:
        self._check()
        latest = {rec.id: rec for rec in records}
        for rec in latest.values():
            old = self.memories.get(rec.id)
            if old is not None and old.tenant_id != rec.tenant_id:
                continue
            if old is not None:
                kept = {"created_at": old.created_at, "superseded_by": old.superseded_by}
                rec = rec.model_copy(update={**kept, "superseded_at": old.superseded_at})
            self.memories[rec.id] = rec
            self._version(rec, "update" if old is not None else "create", rec.updated_at, changed_by)

    def _version(self, rec: MemoryRecord, op: str, at: datetime, changed_by: str | None) -> None:
        versions = self.versions.setdefault((rec.tenant_id, rec.id), [])
        versions.append(
            MemoryVersion(
                memory_id=rec.id, version=len(versions) + 1, op=op, agent_id=rec.agent_id,  # type: ignore[arg-type]
                session_id=rec.session_id, kind=rec.kind, content=rec.content, metadata=rec.metadata,
                source_ids=rec.source_ids, indexed=rec.indexed, valid_from=rec.valid_from,
                valid_to=rec.valid_to, changed_at=at, changed_by=changed_by,
            )
        )  # fmt: skip

    async def memory_history(self, *, tenant_id: str, memory_id: uuid.UUID) -> list[MemoryVersion]:
        self._check()
        return list(self.versions.get((tenant_id, memory_id), []))

    async def get_memory(self, *, tenant_id: str, memory_id: uuid.UUID) -> MemoryRecord | None:
        self._check()
        m = self.memories.get(memory_id)
        return m if m is not None and m.tenant_id == tenant_id else None

    async def get_memories(self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID]) -> list[MemoryRecord]:
        self._check()
        found = (self.memories.get(i) for i in memory_ids)
        return [m for m in found if m is not None and m.tenant_id == tenant_id]

    async def list_memories(
        self,
        *,
        tenant_id: str,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[MemoryRecord]:
        self._check()
        found = sorted(
            (
                m
                for m in self.memories.values()
                if m.tenant_id == tenant_id
                and (agent_id is None or m.agent_id == agent_id)
                and (after is None or (m.created_at, m.id) > after)
            ),
            key=lambda m: (m.created_at, m.id),
        )
        return found[:limit]

    async def delete_memories(
        self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID], changed_by: str | None = None
    ) -> int:
        self._check()
        gone = 0
        for mid in set(memory_ids):
            m = self.memories.get(mid)
            if m is not None and m.tenant_id == tenant_id:
                del self.memories[mid]
                self._version(m, "delete", datetime.now(UTC), changed_by)
                gone += 1
        return gone

    async def find_records(
        self, *, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Literal["episode", "memory"]]:
        self._check()
        found: dict[uuid.UUID, Literal["episode", "memory"]] = {}
        for i in ids:
            if (ep := self.episodes.get(i)) is not None and ep.tenant_id == tenant_id:
                found[i] = "episode"
            elif (m := self.memories.get(i)) is not None and m.tenant_id == tenant_id:
                found[i] = "memory"
        return found

    async def supersede(
        self, *, tenant_id: str, links: Sequence[tuple[uuid.UUID, uuid.UUID, datetime]]
    ) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
        self._check()

        def mark(table: dict[uuid.UUID, Any], key: uuid.UUID, by: uuid.UUID, at: datetime) -> bool:
            row = table.get(key)
            if row is None or row.tenant_id != tenant_id:
                return False
            if row.superseded_at is not None and row.superseded_at <= at:
                return False
            table[key] = row.model_copy(update={"superseded_by": by, "superseded_at": at})
            return True

        applied = []
        for target, by, at in links:
            if mark(self.episodes if target in self.episodes else self.memories, target, by, at):
                applied.append((target, by, at))
            for mid in [m.id for m in self.memories.values() if str(target) in m.source_ids]:
                mark(self.memories, mid, by, at)  # what cites it is replaced with it
        return applied

    async def search_text(
        self, *, tenant_id: str, query: str, k: int, filters: dict[str, Any] | None = None
    ) -> list[tuple[Episode, float]]:
        self._check()
        terms = set(_terms(query))
        scored: list[tuple[Episode, float]] = []
        for ep in self.episodes.values():
            if ep.tenant_id != tenant_id or not _matches(ep, filters or {}):
                continue
            score = float(sum(1 for w in _terms(ep.content) if w in terms))
            if score > 0:
                scored.append((ep, score))
        scored.sort(key=lambda pair: (-pair[1], -pair[0].created_at.timestamp()))
        return scored[:k]

    async def search_memories_text(
        self, *, tenant_id: str, query: str, k: int, filters: dict[str, Any] | None = None
    ) -> list[tuple[MemoryRecord, float]]:
        self._check()
        terms = set(_terms(query))
        scored: list[tuple[MemoryRecord, float]] = []
        for m in self.memories.values():
            if m.tenant_id != tenant_id or not _matches(m, filters or {}):
                continue
            score = float(sum(1 for w in _terms(m.content) if w in terms))
            if score > 0:
                scored.append((m, score))
        scored.sort(key=lambda pair: (-pair[1], -pair[0].created_at.timestamp()))
        return scored[:k]

    async def ping(self) -> None:
        self._check()


def _matches(item: Episode | MemoryRecord, filters: dict[str, Any]) -> bool:
    for name in ("agent_id", "session_id", "kind"):
        want = filters.get(name)
        if want is not None and getattr(item, name) != want:
            return False
    after, before = filters.get("created_after"), filters.get("created_before")
    if after is not None and item.created_at < after:
        return False
    if before is not None and item.created_at >= before:
        return False
    if not _current(item, filters):
        return False
    meta = filters.get("metadata")
    return not meta or all(item.metadata.get(k) == v for k, v in meta.items())


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), tz=UTC)


def _current(item: Episode | MemoryRecord, filters: dict[str, Any]) -> bool:
    """``current_at`` and ``as_of`` as core.stores.postgres_rows.search_filters applies them."""
    valid_from = getattr(item, "valid_from", None)
    valid_to = getattr(item, "valid_to", None)
    if filters.get("current_at") is not None:
        at = _moment(filters["current_at"])
        if item.superseded_at is not None and item.superseded_at <= at:
            return False
        if (valid_to is not None and valid_to <= at) or (valid_from is not None and valid_from > at):
            return False
    if filters.get("as_of") is not None:
        return (valid_from or item.created_at) <= _moment(filters["as_of"])
    return True
