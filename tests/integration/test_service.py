"""HybridMemoryService over the real Redis and Postgres: durability, fallbacks, idempotency, limits."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.errors import InvalidInput, LimitExceeded, StoreUnavailable
from core.schemas import EpisodeIn, TranscriptIn, TranscriptTurnIn
from core.service import HybridMemoryService
from core.settings import load_settings
from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection
from core.stores.redis_working import RedisWorkingStore

pytestmark = pytest.mark.integration


def _service(
    redis_client: aioredis.Redis, pool: asyncpg.Pool, key_prefix: str, **limits: int
) -> HybridMemoryService:
    settings = load_settings({"limits": limits} if limits else None)
    working = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=50, buffer_ttl_s=600)
    return HybridMemoryService(working=working, episodic=PostgresEpisodeStore(pool), settings=settings)


def _ep(i: int, session: str = "s1", **kw: object) -> EpisodeIn:
    return EpisodeIn(id=f"e{i}", agent_id="a1", session_id=session, content=f"turn number {i}", **kw)  # type: ignore[arg-type]


async def test_store_then_recent_context_from_redis(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix)
    await svc.store_episodes(tenant, [_ep(i) for i in range(5)])
    recent = await svc.fetch_recent_context(tenant, "s1", limit=3)
    assert recent.source == "redis"
    assert [e.content for e in recent.episodes] == ["turn number 2", "turn number 3", "turn number 4"]


async def test_redis_down_falls_back_to_postgres(redis_client, pg_pool, key_prefix, tenant):
    await _service(redis_client, pg_pool, key_prefix).store_episodes(tenant, [_ep(i) for i in range(4)])
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        svc = _service(dead, pg_pool, key_prefix)
        recent = await svc.fetch_recent_context(tenant, "s1", limit=10)
        assert recent.source == "postgres"
        assert recent.degraded == ["working"]
        assert len(recent.episodes) == 4
        # writes are still acknowledged: Postgres holds them, the buffer is skipped
        stored = await svc.store_episodes(tenant, [_ep(10)])
        assert stored.inserted == 1
    finally:
        await dead.aclose()


async def test_postgres_down_is_store_unavailable(redis_client, key_prefix, tenant):
    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/postgres", min_size=0, max_size=1, timeout=1, init=init_connection
    )
    try:
        svc = _service(redis_client, pool, key_prefix)
        with pytest.raises(StoreUnavailable) as info:
            await svc.store_episodes(tenant, [_ep(1)])
        assert info.value.store == "postgres"
        with pytest.raises(StoreUnavailable):
            await svc.fetch_recent_context(tenant, "nobuffer", limit=5)
    finally:
        await pool.close()


async def test_replayed_ids_store_once(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix)
    first = await svc.store_episodes(tenant, [_ep(1), _ep(2)])
    again = await svc.store_episodes(tenant, [_ep(1), _ep(2), _ep(3)])
    assert (first.inserted, again.inserted, again.duplicates) == (2, 1, 2)
    assert [e.id for e in first.episodes] == [e.id for e in again.episodes[:2]]
    rows = await svc.list_episodes(tenant, session_id="s1")
    assert len(rows) == 3
    recent = await svc.fetch_recent_context(tenant, "s1", limit=10)
    assert len(recent.episodes) == 3  # the buffer did not get the replays either


async def test_rejected_batch_writes_nothing(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix, max_content_chars=20)
    batch = [_ep(1), EpisodeIn(agent_id="a1", session_id="s1", content="x" * 21), _ep(3)]
    with pytest.raises(LimitExceeded) as info:
        await svc.store_episodes(tenant, batch)
    assert info.value.field == "episodes[1].content"
    assert await svc.list_episodes(tenant) == []
    recent = await svc.fetch_recent_context(tenant, "s1", limit=10)
    assert recent.episodes == []


async def test_metadata_limits_name_the_field(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix, max_metadata_bytes=64, max_metadata_depth=2)
    with pytest.raises(LimitExceeded, match="metadata"):
        await svc.store_episode(tenant, _ep(1, metadata={"blob": "y" * 100}))
    with pytest.raises(LimitExceeded) as info:
        await svc.store_episode(tenant, _ep(1, metadata={"a": {"b": {"c": 1}}}))
    assert info.value.field == "episode.metadata"


async def test_transcript_is_atomic_and_idempotent(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix)
    body = TranscriptIn(
        id="neg-1",
        agent_id="broker",
        session_id="deal-7",
        title="price negotiation",
        participants=["buyer", "seller"],
        turns=[
            TranscriptTurnIn(speaker="buyer", content="I can pay 90."),
            TranscriptTurnIn(speaker="seller", content="100 is my floor."),
        ],
    )
    t1, created1 = await svc.store_transcript(tenant, body)
    t2, created2 = await svc.store_transcript(tenant, body)
    assert (created1, created2) == (True, False)
    assert t1.id == t2.id
    got = await svc.get_transcript(tenant, t1.id)
    assert [t.speaker for t in got.turns] == ["buyer", "seller"]
    assert len(await svc.list_episodes(tenant, session_id="deal-7")) == 2
    bad = body.model_copy(
        update={"id": "neg-2", "turns": [TranscriptTurnIn(speaker="mallory", content="hi")]}
    )
    with pytest.raises(InvalidInput) as info:
        await svc.store_transcript(tenant, bad)
    assert info.value.field == "turns[0].speaker"


async def test_scratchpad_ttl_bounds(redis_client, pg_pool, key_prefix, tenant):
    svc = _service(redis_client, pg_pool, key_prefix, max_ttl_s=60)
    entry = await svc.put_scratchpad(tenant, "a1", "plan", {"step": 1}, ttl_s=30)
    assert (await svc.get_scratchpad(tenant, "a1", "plan")).value == entry.value
    with pytest.raises(InvalidInput) as info:
        await svc.put_scratchpad(tenant, "a1", "plan", 1, ttl_s=61)
    assert info.value.field == "ttl_s"


async def test_health_names_the_store_that_is_down(pg_pool, key_prefix):
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        report = await _service(dead, pg_pool, key_prefix).health()
        assert report.stores["postgres"] == "ok"
        assert report.stores["redis"].startswith("unavailable")
        assert not report.ok
    finally:
        await dead.aclose()


async def test_health_reports_a_hung_store_without_waiting_on_it(pg_pool, key_prefix, monkeypatch):
    """A server that accepts connections and never answers (stopped mid-way, say) is reported after
    HEALTH_TIMEOUT_S, and the other stores are still checked and reported."""
    import asyncio
    import socket
    import time

    import core.service

    monkeypatch.setattr(core.service, "HEALTH_TIMEOUT_S", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshakes; nothing ever reads or writes
    hung = aioredis.Redis.from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}", socket_timeout=None)
    try:
        started = time.monotonic()
        async with asyncio.timeout(5):
            report = await _service(hung, pg_pool, key_prefix).health()
        assert time.monotonic() - started < 2
        assert report.stores == {"redis": "unavailable: no answer within 0.5 s", "postgres": "ok"}
        assert not report.ok
    finally:
        await hung.aclose()
        silent.close()


async def test_postgres_ping_answers_quickly_when_the_pool_is_exhausted(pg_database: str) -> None:
    """Readiness must not wait out the statement timeout: with every pooled connection busy, ping
    reports postgres unavailable within PING_TIMEOUT_S instead of after the store's 30 s timeout."""
    import asyncio

    import asyncpg

    from core.errors import StoreUnavailable
    from core.stores.postgres_episodic import PING_TIMEOUT_S, PostgresEpisodeStore

    pool = await asyncpg.create_pool(pg_database, min_size=1, max_size=1)
    try:
        store = PostgresEpisodeStore(pool, timeout_s=30.0)
        await store.ping()  # a free connection: fine
        async with pool.acquire():  # the only connection is taken
            async with asyncio.timeout(PING_TIMEOUT_S + 3):
                with pytest.raises(StoreUnavailable, match="postgres"):
                    await store.ping()
    finally:
        await pool.close()


async def test_a_buffer_redis_lost_is_rebuilt_from_postgres(redis_client, pg_pool, key_prefix, tenant):
    """Redis restarted empty while the session went on: the buffer holds only the turns after the loss,
    so the next read answers from Postgres (every turn) and rebuilds it; the read after that is Redis's."""
    svc = _service(redis_client, pg_pool, key_prefix)
    await svc.store_episodes(tenant, [_ep(i) for i in range(5)])
    assert (await svc.fetch_recent_context(tenant, "s1", limit=10)).source == "postgres"  # not known whole
    assert (await svc.fetch_recent_context(tenant, "s1", limit=10)).source == "redis"
    lost = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")]
    await redis_client.delete(*lost)
    await svc.store_episodes(tenant, [_ep(5)])
    first = await svc.fetch_recent_context(tenant, "s1", limit=10)
    expected = [e.content for e in first.episodes]  # one batch shares a timestamp: Postgres' order
    assert first.source == "postgres" and sorted(expected) == [f"turn number {i}" for i in range(6)]
    again = await svc.fetch_recent_context(tenant, "s1", limit=10)
    assert (again.source, [e.content for e in again.episodes]) == ("redis", expected)
    last_two = await svc.fetch_recent_context(tenant, "s1", limit=2)
    assert [e.content for e in last_two.episodes] == expected[-2:]
