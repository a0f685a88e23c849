"""instrument_store over the real adapters: per-call metrics, store_up, one JSON log line per operation."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from core import metrics as m
from core.errors import InvalidInput, StoreUnavailable
from core.ids import content_hash, hash_tenant, partition_of
from core.instrumented_store import InstrumentedStore, instrument_store
from core.logs import configure_logging, request_scope
from core.models import Episode, Role
from core.stores.postgres_episodic import PostgresEpisodeStore
from core.stores.redis_working import RedisWorkingStore

pytestmark = pytest.mark.integration


@pytest.fixture
def prom() -> Iterator[m.PrometheusBackend]:
    backend = m.PrometheusBackend()
    m.use_backend(backend)
    try:
        yield backend
    finally:
        m.use_backend(None)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _samples(backend: m.PrometheusBackend) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(backend.render().decode())
        for s in family.samples
    }


def _episodes(tenant: str, n: int) -> list[Episode]:
    now = datetime.now(UTC)
    return [
        Episode(
            id=uuid.uuid4(),
            tenant_id=tenant,
            agent_id="a",
            session_id="s",
            partition=partition_of(tenant, "s", 16),
            role=Role.USER,
            kind="message",
            content=f"hello {i}",
            created_at=now,
            content_hash=content_hash(f"hello {i}"),
        )
        for i in range(n)
    ]


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


async def test_postgres_calls_are_measured_and_logged(
    pg_pool: asyncpg.Pool, tenant: str, prom: m.PrometheusBackend, logs: io.StringIO
) -> None:
    store = instrument_store(PostgresEpisodeStore(pg_pool), "postgres")
    assert isinstance(store, InstrumentedStore) and instrument_store(store, "postgres") is store
    episodes = _episodes(tenant, 3)
    with request_scope("req-42"):
        assert len(await store.insert_episodes(episodes)) == 3
        assert await store.insert_episodes(episodes) == []  # a replay writes nothing
        assert await store.get_episode(tenant_id=tenant, episode_id=episodes[0].id) is not None
    s = _samples(prom)
    insert = frozenset({("store", "postgres"), ("operation", "insert_episodes")})
    assert s[("hybridmem_ingest_records_total", insert)] == 3
    assert s[("hybridmem_store_operation_seconds_count", insert | {("outcome", "ok")})] == 2
    get = frozenset({("store", "postgres"), ("operation", "get_episode"), ("outcome", "ok")})
    assert s[("hybridmem_store_operation_seconds_count", get)] == 1
    assert s[("hybridmem_store_up", frozenset({("store", "postgres")}))] == 1
    lines = _lines(logs)
    assert [line["operation"] for line in lines] == [
        "insert_episodes",
        "insert_episodes",
    ]  # reads log at DEBUG
    first = lines[0]
    assert first["request_id"] == "req-42" and first["tenant"] == hash_tenant(tenant)
    assert first["record_ids"] == [str(e.id) for e in episodes] and first["latency_ms"] >= 0
    assert tenant not in logs.getvalue()


async def test_refusals_are_not_store_errors(
    pg_pool: asyncpg.Pool, tenant: str, prom: m.PrometheusBackend
) -> None:
    store = instrument_store(PostgresEpisodeStore(pg_pool), "postgres")
    bad = _episodes(tenant, 1)[0].model_copy(update={"content": "nul \x00 byte"})
    with pytest.raises(InvalidInput):  # Postgres refuses NUL in text: the store answered, it is not down
        await store.insert_episodes([bad])
    s = _samples(prom)
    assert not any(name == "hybridmem_store_errors_total" for name, _ in s)
    op = frozenset({("store", "postgres"), ("operation", "insert_episodes"), ("outcome", "ok")})
    assert s[("hybridmem_store_operation_seconds_count", op)] == 1


async def test_unreachable_redis_counts_an_error_and_marks_the_store_down(
    redis_client: aioredis.Redis, key_prefix: str, tenant: str, prom: m.PrometheusBackend, logs: io.StringIO
) -> None:
    up = instrument_store(
        RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=10, buffer_ttl_s=60), "redis"
    )
    await up.append_session(_episodes(tenant, 2))
    assert _samples(prom)[("hybridmem_store_up", frozenset({("store", "redis")}))] == 1

    dead_client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        down = instrument_store(
            RedisWorkingStore(dead_client, prefix=key_prefix, buffer_max_len=10, buffer_ttl_s=60), "redis"
        )
        with pytest.raises(StoreUnavailable):
            await down.append_session(_episodes(tenant, 1))
    finally:
        await dead_client.aclose()
    s = _samples(prom)
    op = frozenset({("store", "redis"), ("operation", "append_session")})
    assert s[("hybridmem_store_errors_total", op)] == 1
    assert s[("hybridmem_ingest_records_total", op)] == 2
    assert s[("hybridmem_store_operation_seconds_count", op | {("outcome", "error")})] == 1
    assert s[("hybridmem_store_up", frozenset({("store", "redis")}))] == 0
    failed = _lines(logs)[-1]
    assert failed["level"] == "WARNING" and failed["operation"] == "append_session" and "error" in failed
