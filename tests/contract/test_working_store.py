"""WorkingStore contract: the same calls against the in-memory fake and the real Redis adapter."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.errors import InvalidInput, StoreUnavailable
from core.ids import content_hash, partition_of
from core.models import Episode, Role, ScratchpadEntry
from core.ports import WorkingStore
from core.stores.redis_working import RedisWorkingStore, encode_component
from tests.fakes import InMemoryWorkingStore

MAX_LEN = 5
TTL_S = 600
HOSTILE = [
    "a:b",
    "a",
    "*",
    "a*",
    "x:*:y",
    "[ab]?",
    "'; DROP TABLE episodes; --",
    'q"uote',
    "%2A",
    "ünï cødé 🚀",
    "a\x1fb",
]

impls = ["fake", pytest.param("redis", marks=pytest.mark.integration)]


def episode(tenant: str, session: str, n: int, *, content: str | None = None) -> Episode:
    text = content if content is not None else f"turn {n}"
    return Episode(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id="agent-1",
        session_id=session,
        partition=partition_of(tenant, session, 16),
        role=Role.USER,
        kind="message",
        content=text,
        metadata={"n": n},
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        content_hash=content_hash(text),
    )


@pytest.fixture(params=impls)
def store(request: pytest.FixtureRequest) -> WorkingStore:
    if request.param == "fake":
        return InMemoryWorkingStore(buffer_max_len=MAX_LEN, buffer_ttl_s=TTL_S)
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("key_prefix")
    return RedisWorkingStore(client, prefix=prefix, buffer_max_len=MAX_LEN, buffer_ttl_s=TTL_S)


async def test_append_caps_buffer_and_returns_oldest_first(store: WorkingStore, tenant: str) -> None:
    eps = [episode(tenant, "s1", n) for n in range(7)]
    await store.append_session(eps[:3])
    await store.append_session(eps[3:])
    assert await store.recent_session(tenant_id=tenant, session_id="s1", limit=100) == eps[-MAX_LEN:]
    assert await store.recent_session(tenant_id=tenant, session_id="s1", limit=2) == eps[-2:]
    assert await store.recent_session(tenant_id=tenant, session_id="s1", limit=0) == []
    assert await store.recent_session(tenant_id=tenant, session_id="nope", limit=5) == []


async def test_one_bulk_append_spans_several_sessions(store: WorkingStore, tenant: str) -> None:
    eps = [episode(tenant, f"s{n % 3}", n) for n in range(9)]
    await store.append_session(eps)
    for s in range(3):
        got = await store.recent_session(tenant_id=tenant, session_id=f"s{s}", limit=10)
        assert got == [e for e in eps if e.session_id == f"s{s}"]


async def test_same_session_id_in_two_tenants_is_isolated(store: WorkingStore, tenant: str) -> None:
    other = tenant + "-other"
    mine, theirs = episode(tenant, "shared", 1), episode(other, "shared", 2)
    await store.append_session([mine, theirs])
    assert await store.recent_session(tenant_id=tenant, session_id="shared", limit=10) == [mine]
    await store.delete_session(tenant_id=tenant, session_id="shared")
    assert await store.recent_session(tenant_id=tenant, session_id="shared", limit=10) == []
    assert await store.recent_session(tenant_id=other, session_id="shared", limit=10) == [theirs]


async def test_remove_from_sessions_only_touches_the_tenant(store: WorkingStore, tenant: str) -> None:
    other = tenant + "-other"
    a, b, c = episode(tenant, "s1", 1), episode(tenant, "s2", 2), episode(tenant, "s1", 3)
    foreign = episode(other, "s1", 4)
    await store.append_session([a, b, c, foreign])
    removed = await store.remove_from_sessions(tenant_id=tenant, episode_ids=[a.id, b.id, foreign.id])
    assert removed == 2
    assert await store.recent_session(tenant_id=tenant, session_id="s1", limit=10) == [c]
    assert await store.recent_session(tenant_id=tenant, session_id="s2", limit=10) == []
    assert await store.recent_session(tenant_id=other, session_id="s1", limit=10) == [foreign]
    assert await store.remove_from_sessions(tenant_id=tenant, episode_ids=[]) == 0


async def test_sessions_in_partition_lists_live_buffers(store: Any, tenant: str) -> None:
    eps = [episode(tenant, session, 1) for session in ("p-a", "p:b", "p*c")]
    await store.append_session(eps)
    for ep in eps:
        assert (tenant, ep.session_id) in await store.sessions_in_partition(ep.partition)
    await store.delete_session(tenant_id=tenant, session_id="p-a")
    assert (tenant, "p-a") not in await store.sessions_in_partition(eps[0].partition)


async def test_scratchpad_put_get_delete_and_ttl_expiry(store: WorkingStore, tenant: str) -> None:
    put = await store.put_scratchpad(
        tenant_id=tenant, agent_id="ag", key="plan", value={"steps": [1, 2]}, ttl_s=None
    )
    await store.put_scratchpad(tenant_id=tenant, agent_id="ag", key="short", value="soon gone", ttl_s=1)
    got = await store.get_scratchpad(tenant_id=tenant, agent_id="ag", key="plan")
    assert got == put and got.value == {"steps": [1, 2]} and got.ttl_s is None
    assert await store.get_scratchpad(tenant_id=tenant, agent_id="other-agent", key="plan") is None
    assert await store.get_scratchpad(tenant_id=tenant + "x", agent_id="ag", key="plan") is None

    await asyncio.sleep(1.1)
    assert await store.get_scratchpad(tenant_id=tenant, agent_id="ag", key="short") is None
    page, cursor = await store.list_scratchpads(tenant_id=tenant, agent_id="ag")
    assert [e.key for e in page] == ["plan"] and cursor is None

    with pytest.raises(InvalidInput):
        await store.put_scratchpad(tenant_id=tenant, agent_id="ag", key="bad", value=1, ttl_s=0)
    assert await store.delete_scratchpad(tenant_id=tenant, agent_id="ag", key="plan") is True
    assert await store.delete_scratchpad(tenant_id=tenant, agent_id="ag", key="plan") is False
    assert await store.get_scratchpad(tenant_id=tenant, agent_id="ag", key="plan") is None
    assert await store.list_scratchpads(tenant_id=tenant, agent_id="ag") == ([], None)


async def test_bulk_put_and_cursor_pagination(store: WorkingStore, tenant: str) -> None:
    now = datetime.now(UTC)
    entries = [
        ScratchpadEntry(tenant_id=tenant, agent_id="ag", key=f"k{n:03d}", value=n, ttl_s=300, updated_at=now)
        for n in range(45)
    ]
    await store.put_scratchpads(entries)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.list_scratchpads(tenant_id=tenant, agent_id="ag", cursor=cursor, limit=20)
        seen.extend(e.key for e in page)
        pages += 1
        if cursor is None:
            break
    assert seen == [e.key for e in entries]
    assert pages == 3
    page, cursor = await store.list_scratchpads(tenant_id=tenant, agent_id="ag", limit=45)
    assert len(page) == 45 and cursor is None
    got = await store.get_scratchpad(tenant_id=tenant, agent_id="ag", key="k007")
    assert got is not None and got.value == 7


async def test_hostile_ids_round_trip_and_stay_isolated(store: WorkingStore) -> None:
    base = uuid.uuid4().hex[:8]
    tenants = [base + t for t in ("", ":b", "*", ":*")]
    for t in tenants:
        await store.append_session([episode(t, s, n) for n, s in enumerate(HOSTILE)])
        for agent in HOSTILE:
            await store.put_scratchpad(
                tenant_id=t, agent_id=agent, key=agent + ":" + t, value=[t, agent], ttl_s=60
            )
    for t in tenants:
        for s in HOSTILE:
            buf = await store.recent_session(tenant_id=t, session_id=s, limit=10)
            assert [(e.tenant_id, e.session_id) for e in buf] == [(t, s)]
        for agent in HOSTILE:
            page, _ = await store.list_scratchpads(tenant_id=t, agent_id=agent)
            assert [(e.key, e.value) for e in page] == [(agent + ":" + t, [t, agent])]


async def test_unavailable_store_raises_store_unavailable(store: Any) -> None:
    client = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    if isinstance(store, InMemoryWorkingStore):
        store.available = False
        down: Any = store
    else:
        down = RedisWorkingStore(client, prefix="hmtest:down", buffer_max_len=5, buffer_ttl_s=60)
    try:
        with pytest.raises(StoreUnavailable) as err:
            await down.ping()
        assert err.value.store == "redis"
        with pytest.raises(StoreUnavailable):
            await down.append_session([episode("t", "s", 1)])
        with pytest.raises(StoreUnavailable):
            await down.get_scratchpad(tenant_id="t", agent_id="a", key="k")
        with pytest.raises(StoreUnavailable):
            await down.list_scratchpads(tenant_id="t", agent_id="a")
        with pytest.raises(StoreUnavailable):
            await down.remove_from_sessions(tenant_id="t", episode_ids=[uuid.uuid4()])
    finally:
        await client.aclose()


# -- Redis-only: the key layout and TTL bookkeeping ----------------------------------------------


@pytest.mark.integration
async def test_redis_refreshes_buffer_ttl_on_every_write(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    store = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=MAX_LEN, buffer_ttl_s=TTL_S)
    await store.append_session([episode("t1", "s1", 1)])
    key = store.session_key("t1", "s1")
    assert 0 < await redis_client.ttl(key) <= TTL_S
    await redis_client.expire(key, 5)
    await store.append_session([episode("t1", "s1", 2)])
    assert await redis_client.ttl(key) > 5
    assert await redis_client.llen(key) == 2
    pad = store._pad_key("t1", "ag", "k")
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="k", value=1, ttl_s=30)
    assert 0 < await redis_client.ttl(pad) <= 30
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="k", value=1, ttl_s=None)
    assert await redis_client.ttl(pad) == -1


@pytest.mark.integration
async def test_redis_scratchpad_index_lives_as_long_as_its_longest_entry(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    store = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=MAX_LEN, buffer_ttl_s=TTL_S)
    index = store._pad_index_key("t1", "ag")
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="a", value=1, ttl_s=100)
    assert 90 < await redis_client.ttl(index) <= 100
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="b", value=1, ttl_s=10)
    assert await redis_client.ttl(index) > 90  # a shorter entry never shortens the index
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="c", value=1, ttl_s=500)
    assert await redis_client.ttl(index) > 400
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="d", value=1, ttl_s=None)
    assert await redis_client.ttl(index) == -1
    await store.put_scratchpad(tenant_id="t1", agent_id="ag", key="e", value=1, ttl_s=10)
    assert await redis_client.ttl(index) == -1  # a persistent entry keeps the index persistent
    page, _ = await store.list_scratchpads(tenant_id="t1", agent_id="ag")
    assert [e.key for e in page] == ["a", "b", "c", "d", "e"]


@pytest.mark.integration
async def test_redis_keys_of_one_tenant_never_match_another_tenants_scan(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    store = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=MAX_LEN, buffer_ttl_s=TTL_S)
    for t in ("a", "a:b", "a*", "*"):
        await store.append_session([episode(t, "s", 1)])
        await store.put_scratchpad(tenant_id=t, agent_id="x", key="k", value=t, ttl_s=60)
    pattern = f"{key_prefix}:t:{encode_component('a')}:*"
    keys = {k.decode() async for k in redis_client.scan_iter(match=pattern)}
    assert keys and all(k.startswith(f"{key_prefix}:t:a:") for k in keys)
    star = f"{key_prefix}:t:{encode_component('*')}:*"
    star_keys = {k.decode() async for k in redis_client.scan_iter(match=star)}
    assert star_keys and all(k.startswith(f"{key_prefix}:t:%2A:") for k in star_keys)


async def test_a_buffer_is_full_only_once_rebuilt_and_a_rebuild_never_loses_an_append(
    store: WorkingStore, tenant: str
) -> None:
    turns = [episode(tenant, "s", n) for n in range(4)]
    await store.append_session(turns[3:])  # a buffer made by appends: what came after a loss
    read = await store.read_session(tenant_id=tenant, session_id="s", limit=3)
    assert ([e.id for e in read.episodes], read.full, read.length) == ([turns[3].id], False, 1)

    # A rebuild against a stale length (an append came in between) leaves the buffer alone.
    assert not await store.fill_session(tenant_id=tenant, session_id="s", episodes=turns, expected_length=0)
    assert await store.fill_session(tenant_id=tenant, session_id="s", episodes=turns, expected_length=1)
    read = await store.read_session(tenant_id=tenant, session_id="s", limit=3)
    assert ([e.id for e in read.episodes], read.full, read.length) == (
        [t.id for t in turns[1:]],
        True,
        MAX_LEN - 1,
    )

    await store.append_session([episode(tenant, "s", 4), episode(tenant, "s", 5)])  # capped, still full
    read = await store.read_session(tenant_id=tenant, session_id="s", limit=10)
    assert read.full and read.length == MAX_LEN and read.episodes[-1].content == "turn 5"
    # A rebuilt session is found by the tenant-wide cleanup like any other.
    assert await store.remove_from_sessions(tenant_id=tenant, episode_ids=[turns[1].id]) == 1
    await store.delete_session(tenant_id=tenant, session_id="s")
    read = await store.read_session(tenant_id=tenant, session_id="s", limit=3)
    assert (read.episodes, read.full, read.length) == ([], False, 0)
