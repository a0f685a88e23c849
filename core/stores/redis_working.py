"""Working tier on Redis: per-session conversation buffers and per-agent scratchpads.

Key namespaces (``{t}``, ``{s}``, ``{a}``, ``{k}`` are percent-encoded ids, so ``:``, ``*``, ``?``, ``[``
and ``%`` in an id can neither collide with another key nor widen a ``SCAN MATCH`` pattern):

    {prefix}:t:{t}:sess:{s}        list   JSON episodes, oldest first; LTRIM-capped, EXPIRE refreshed on write
    {prefix}:t:{t}:sess:{s}:full   string "1" while the list holds the session's newest turns up to the cap
                                          (set by a rebuild from Postgres; gone with the list, e.g. when
                                          Redis restarts empty, so the next short read rebuilds)
    {prefix}:t:{t}:sessions        zset   raw session ids of the tenant with a buffer, scored by last write
    {prefix}:p:{partition}:sessions zset  "{t}:{s}" members, scored by last write (consolidation drains these)
    {prefix}:t:{t}:pad:{a}:{k}     string JSON ScratchpadEntry, with its own TTL (none: persistent)
    {prefix}:t:{t}:padidx:{a}      zset   raw keys of the agent's scratchpads (score 0, listed BYLEX);
                                          lives as long as its longest-lived entry; members whose value
                                          expired are pruned lazily on list

Every call maps redis errors to ``StoreUnavailable("redis")``; the client's socket timeout bounds each call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import InvalidInput, StoreUnavailable
from core.models import Episode, ScratchpadEntry
from core.ports import BufferRead

_FULL = ":full"  # suffix of a session buffer's "holds the newest turns" marker

# Add a key to a scratchpad index and keep the index alive at least as long as that entry:
# a persistent entry makes the index persistent; a TTL entry only ever extends a volatile index.
_INDEX_ADD = """
local ttl = redis.call('TTL', KEYS[1])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
if ARGV[2] == '' then
  redis.call('PERSIST', KEYS[1])
elseif ttl == -2 or (ttl >= 0 and ttl < tonumber(ARGV[2])) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


def encode_component(value: str) -> str:
    """Percent-encode one key component: the result holds only ``[A-Za-z0-9_.~%-]``."""
    return quote(value, safe="")


def _text(value: Any) -> str:
    """A reply item as text (the client may or may not have ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# Replace a session buffer with the given turns, unless it changed since it was read (an append in
# between would be lost): KEYS list, full-marker, tenant sessions; ARGV expected length, ttl, max length,
# session id, now, then the JSON turns.
_FILL = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
if #ARGV > 5 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


class RedisWorkingStore:
    """WorkingStore on a ``redis.asyncio.Redis`` client. Borrows the client; never closes it."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, buffer_max_len: int, buffer_ttl_s: int
    ) -> None:
        if buffer_max_len < 1 or buffer_ttl_s < 1:
            raise ValueError("buffer_max_len and buffer_ttl_s must be >= 1")
        self._r = client
        self._prefix = prefix
        self._max_len = buffer_max_len
        self._ttl_s = buffer_ttl_s

    # -- key layout ------------------------------------------------------------------------------

    def _tenant(self, tenant_id: str) -> str:
        return f"{self._prefix}:t:{encode_component(tenant_id)}"

    def session_key(self, tenant_id: str, session_id: str) -> str:
        return f"{self._tenant(tenant_id)}:sess:{encode_component(session_id)}"

    def _tenant_sessions_key(self, tenant_id: str) -> str:
        return f"{self._tenant(tenant_id)}:sessions"

    def _partition_key(self, partition: int) -> str:
        return f"{self._prefix}:p:{int(partition)}:sessions"

    def _pad_key(self, tenant_id: str, agent_id: str, key: str) -> str:
        return f"{self._tenant(tenant_id)}:pad:{encode_component(agent_id)}:{encode_component(key)}"

    def _pad_index_key(self, tenant_id: str, agent_id: str) -> str:
        return f"{self._tenant(tenant_id)}:padidx:{encode_component(agent_id)}"

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis", type(exc).__name__) from exc

    async def ping(self) -> None:
        with self._translate():
            await self._r.ping()

    # -- session buffers --------------------------------------------------------------------------

    async def append_session(self, episodes: Sequence[Episode]) -> None:
        """Append to each session's buffer in one pipelined round trip; cap length and refresh TTLs."""
        if not episodes:
            return
        now = time.time()
        by_session: dict[tuple[str, str], list[Episode]] = {}
        for ep in episodes:
            by_session.setdefault((ep.tenant_id, ep.session_id), []).append(ep)
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                for (tenant_id, session_id), eps in by_session.items():
                    key = self.session_key(tenant_id, session_id)
                    pipe.rpush(key, *[ep.model_dump_json() for ep in eps])
                    pipe.ltrim(key, -self._max_len, -1)
                    pipe.expire(key, self._ttl_s)
                    pipe.expire(key + _FULL, self._ttl_s)
                    tenant_sessions = self._tenant_sessions_key(tenant_id)
                    pipe.zadd(tenant_sessions, {session_id: now})
                    pipe.expire(tenant_sessions, self._ttl_s)
                    part_key = self._partition_key(eps[-1].partition)
                    member = f"{encode_component(tenant_id)}:{encode_component(session_id)}"
                    pipe.zadd(part_key, {member: now})
                    pipe.expire(part_key, self._ttl_s)
                await pipe.execute()

    async def recent_session(self, *, tenant_id: str, session_id: str, limit: int) -> list[Episode]:
        """Newest ``limit`` episodes of the session buffer, oldest first."""
        if limit <= 0:
            return []
        with self._translate():
            raw = await self._r.lrange(self.session_key(tenant_id, session_id), -limit, -1)
        return [Episode.model_validate_json(item) for item in raw]

    async def read_session(self, *, tenant_id: str, session_id: str, limit: int) -> BufferRead:
        """The newest ``limit`` turns, whether the buffer is known to hold the session's newest turns up to
        its cap, and the buffer's length (one round trip)."""
        key = self.session_key(tenant_id, session_id)
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.lrange(key, -limit, -1) if limit > 0 else pipe.lrange(key, 1, 0)
                pipe.exists(key + _FULL)
                pipe.llen(key)
                raw, full, length = await pipe.execute()
        return BufferRead([Episode.model_validate_json(i) for i in raw], bool(full), int(length))

    async def fill_session(
        self, *, tenant_id: str, session_id: str, episodes: Sequence[Episode], expected_length: int
    ) -> bool:
        """Replace the buffer with ``episodes`` (a session's newest turns, oldest first, from Postgres) and
        mark it full, unless its length is no longer ``expected_length``; True when it was replaced."""
        key = self.session_key(tenant_id, session_id)
        items = [ep.model_dump_json() for ep in episodes[-self._max_len :]]
        keys = [key, key + _FULL, self._tenant_sessions_key(tenant_id)]
        args: list[str | int | float] = [expected_length, self._ttl_s, self._max_len, session_id, time.time()]
        args += items
        with self._translate():
            done = await self._r.eval(_FILL, len(keys), *keys, *args)
        return bool(done)

    async def delete_session(self, *, tenant_id: str, session_id: str) -> None:
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.delete(
                    self.session_key(tenant_id, session_id), self.session_key(tenant_id, session_id) + _FULL
                )
                pipe.zrem(self._tenant_sessions_key(tenant_id), session_id)
                await pipe.execute()

    async def remove_from_sessions(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int:
        """Drop the given episodes from every session buffer of the tenant; returns how many were removed."""
        wanted = {str(i) for i in episode_ids}
        if not wanted:
            return 0
        with self._translate():
            sessions = [_text(s) for s in await self._r.zrange(self._tenant_sessions_key(tenant_id), 0, -1)]
            if not sessions:
                return 0
            async with self._r.pipeline(transaction=False) as pipe:
                for session_id in sessions:
                    pipe.lrange(self.session_key(tenant_id, session_id), 0, -1)
                buffers: list[list[bytes | str]] = await pipe.execute()
            async with self._r.pipeline(transaction=False) as pipe:
                queued = 0
                for session_id, items in zip(sessions, buffers, strict=True):
                    for item in items:
                        if str(json.loads(item).get("id")) in wanted:
                            pipe.lrem(self.session_key(tenant_id, session_id), 0, _text(item))
                            queued += 1
                counts: list[int] = await pipe.execute() if queued else []
        return sum(counts)

    async def sessions_in_partition(self, partition: int) -> list[tuple[str, str]]:
        """(tenant_id, session_id) pairs with a live buffer in ``partition``; stale members are pruned."""
        key = self._partition_key(partition)
        with self._translate():
            await self._r.zremrangebyscore(key, "-inf", time.time() - self._ttl_s)
            members = [_text(m) for m in await self._r.zrange(key, 0, -1)]
            pairs: list[tuple[str, str]] = []
            for member in members:
                tenant_enc, _, session_enc = member.partition(":")
                pairs.append((unquote(tenant_enc), unquote(session_enc)))
            if not pairs:
                return []
            async with self._r.pipeline(transaction=False) as pipe:
                for tenant_id, session_id in pairs:
                    pipe.exists(self.session_key(tenant_id, session_id))
                alive: list[int] = await pipe.execute()
            dead = [m for m, a in zip(members, alive, strict=True) if not a]
            if dead:
                await self._r.zrem(key, *dead)
        return sorted(p for p, a in zip(pairs, alive, strict=True) if a)

    # -- scratchpads ------------------------------------------------------------------------------

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
        """Write every entry (value + index membership) in one pipelined round trip."""
        if not entries:
            return
        for e in entries:
            if e.ttl_s is not None and e.ttl_s < 1:
                raise InvalidInput("ttl_s", "must be at least 1 second (or null for no expiry)")
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                for e in entries:
                    pipe.set(self._pad_key(e.tenant_id, e.agent_id, e.key), e.model_dump_json(), ex=e.ttl_s)
                    ttl = "" if e.ttl_s is None else str(e.ttl_s)
                    pipe.eval(_INDEX_ADD, 1, self._pad_index_key(e.tenant_id, e.agent_id), e.key, ttl)
                await pipe.execute()

    async def get_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> ScratchpadEntry | None:
        with self._translate():
            raw = await self._r.get(self._pad_key(tenant_id, agent_id, key))
        return ScratchpadEntry.model_validate_json(raw) if raw is not None else None

    async def delete_scratchpad(self, *, tenant_id: str, agent_id: str, key: str) -> bool:
        with self._translate():
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.delete(self._pad_key(tenant_id, agent_id, key))
                pipe.zrem(self._pad_index_key(tenant_id, agent_id), key)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list_scratchpads(
        self, *, tenant_id: str, agent_id: str, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[ScratchpadEntry], str | None]:
        """A page of live entries in key (byte) order; the cursor is the last key returned."""
        if limit <= 0:
            return [], cursor
        index = self._pad_index_key(tenant_id, agent_id)
        found: list[ScratchpadEntry] = []
        start: bytes = b"(" + cursor.encode() if cursor is not None else b"-"
        with self._translate():
            while len(found) <= limit:
                want = limit + 1 - len(found)
                keys = [
                    _text(k) for k in await self._r.zrange(index, start, b"+", bylex=True, offset=0, num=want)
                ]
                if not keys:
                    break
                values = await self._r.mget([self._pad_key(tenant_id, agent_id, k) for k in keys])
                expired = [k for k, v in zip(keys, values, strict=True) if v is None]
                if expired:
                    await self._r.zrem(index, *expired)
                found.extend(ScratchpadEntry.model_validate_json(v) for v in values if v is not None)
                start = b"(" + keys[-1].encode()
                if len(keys) < want:
                    break
        page = found[:limit]
        return page, (page[-1].key if len(found) > limit else None)
