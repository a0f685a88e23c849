"""Opens and closes every client hybridmem needs, in one place, with an AsyncExitStack."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.errors import StoreUnavailable
from core.instrumented_store import instrument_store
from core.settings import Settings
from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection
from core.stores.redis_working import RedisWorkingStore


@dataclass
class Resources:
    redis: aioredis.Redis
    pool: asyncpg.Pool
    working: RedisWorkingStore
    episodic: PostgresEpisodeStore


def redis_client(settings: Settings) -> aioredis.Redis:
    if not settings.redis.url:
        raise StoreUnavailable("redis", "no Redis URL configured (HYBRIDMEM_REDIS__URL)")
    return aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.socket_timeout_s,
        health_check_interval=30,
        # One quick retry: a down Redis must fail fast so reads fall back to Postgres.
        retry=Retry(NoBackoff(), 1),
    )


async def postgres_pool(settings: Settings) -> asyncpg.Pool:
    pg = settings.postgres
    if not pg.dsn:
        raise StoreUnavailable("postgres", "no Postgres DSN configured (HYBRIDMEM_POSTGRES__DSN)")
    try:
        pool = await asyncpg.create_pool(
            pg.dsn,
            min_size=pg.pool_min_size,
            max_size=pg.pool_max_size,
            command_timeout=pg.command_timeout_s,
            timeout=pg.connect_timeout_s,
            init=init_connection,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StoreUnavailable("postgres", str(exc)) from exc
    return pool


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Redis client and Postgres pool plus the tier adapters over them; all closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        client = redis_client(settings)
        stack.push_async_callback(client.aclose)
        pool = await postgres_pool(settings)
        stack.push_async_callback(pool.close)
        working = instrument_store(
            RedisWorkingStore(
                client,
                prefix=settings.redis.key_prefix,
                buffer_max_len=settings.redis.session_buffer_max_len,
                buffer_ttl_s=settings.redis.session_buffer_ttl_s,
            ),
            "redis",
        )
        yield Resources(
            redis=client,
            pool=pool,
            working=working,
            episodic=instrument_store(PostgresEpisodeStore(pool), "postgres"),
        )
