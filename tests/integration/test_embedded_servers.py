"""The fresh-machine path: embedded Valkey + Postgres in a temp dir, migrated, round-tripped, stopped."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import migrate
from core.resources import open_resources
from core.schemas import EpisodeIn
from core.service import HybridMemoryService
from core.settings import load_settings
from deployments.embedded_servers import EmbeddedServers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port_open(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


def test_embedded_servers_round_trip(tmp_path: Path) -> None:
    servers = EmbeddedServers(tmp_path / "data").start(redis=True, postgres=True)
    try:
        assert servers.redis_url and servers.postgres_dsn
        asyncio.run(migrate.upgrade(servers.postgres_dsn))
        settings = load_settings(
            {
                "redis": {"url": servers.redis_url, "key_prefix": "smoke"},
                "postgres": {"dsn": servers.postgres_dsn},
            }
        )

        async def round_trip() -> None:
            async with open_resources(settings) as res:
                svc = HybridMemoryService(working=res.working, episodic=res.episodic, settings=settings)
                await svc.store_episode(
                    "t", EpisodeIn(agent_id="a", session_id="s", content="embedded hello")
                )
                recent = await svc.fetch_recent_context("t", "s", read_preference="postgres_only")
                assert [e.content for e in recent.episodes] == ["embedded hello"]
                assert (await svc.health()).ok

        asyncio.run(round_trip())
        redis_url = servers.redis_url
    finally:
        servers.stop()
    assert not _port_open(redis_url)
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()

    async def pg_is_down(dsn: str) -> None:
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(dsn, timeout=2)

    asyncio.run(pg_is_down(servers.postgres_dsn or ""))

    async def redis_is_down(url: str) -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            with pytest.raises(Exception, match=r"(?i)connect"):
                await client.ping()
        finally:
            await client.aclose()

    asyncio.run(redis_is_down(redis_url))
