"""A throwaway but real environment for benchmarks: stores, a fresh database, the app on local Ray."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from core import migrate
from core.auth import new_api_key
from core.settings import ALL_SCOPES, ApiKeySpec
from deployments.embedded_servers import EmbeddedServers

LOCAL_REDIS = "redis://127.0.0.1:6379"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class BenchApp:
    base_url: str
    key: str
    tenant: str
    settings: dict[str, Any]
    data_dir: Path


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=0.5
        ):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def bench_stores(data_dir: Path) -> Iterator[tuple[str, str]]:
    """(redis_url, dsn of a fresh migrated database): configured, local, or embedded; dropped after."""
    servers = EmbeddedServers(data_dir)
    redis_url = os.environ.get("HYBRIDMEM_REDIS__URL") or (
        LOCAL_REDIS if _reachable(LOCAL_REDIS, 6379) else None
    )
    admin = os.environ.get("HYBRIDMEM_BENCH_POSTGRES_ADMIN") or (
        LOCAL_PG if _reachable(LOCAL_PG, 5432) else None
    )
    servers.start(redis=redis_url is None, postgres=admin is None, database="postgres")
    redis_url = redis_url or servers.redis_url
    admin = admin or servers.postgres_dsn
    if not (redis_url and admin):
        raise RuntimeError("no Redis or Postgres could be found or started for the benchmark")
    name = f"hm_bench_{uuid.uuid4().hex[:10]}"
    dsn = urlunsplit(urlsplit(admin)._replace(path="/" + name))

    async def create() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate.upgrade(dsn)

    async def drop() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield redis_url, dsn
    finally:
        asyncio.run(drop())
        servers.stop()


@contextlib.contextmanager
def bench_app(settings_extra: dict[str, Any] | None = None, **local_kwargs: Any) -> Iterator[BenchApp]:
    """The real app (all deployments) on local Ray over fresh stores, with one read/write/admin key."""
    from core.settings import _deep_merge
    from deployments.local import local_app

    with tempfile.TemporaryDirectory(prefix="hm-bench-") as tmp:
        data_dir = Path(tmp)
        with bench_stores(data_dir / "servers") as (redis_url, dsn):
            key, tenant = new_api_key(), "bench"
            settings: dict[str, Any] = {
                "env": "test",
                "data_dir": str(data_dir),
                "redis": {"url": redis_url, "key_prefix": f"hmbench:{uuid.uuid4().hex[:8]}"},
                "postgres": {"dsn": dsn},
                "qdrant": {"backend": "edge", "path": str(data_dir / "qdrant")},
                "consolidation": {"enabled": False},
                "auth": {
                    "api_keys": [
                        ApiKeySpec(
                            key_sha256=ApiKeySpec.hash_key(key), tenant_id=tenant, scopes=list(ALL_SCOPES)
                        ).model_dump()
                    ]
                },
            }
            settings = _deep_merge(settings, settings_extra or {})
            try:
                with local_app(settings, **local_kwargs) as base_url:
                    yield BenchApp(
                        base_url=base_url, key=key, tenant=tenant, settings=settings, data_dir=data_dir
                    )
            finally:
                drop_key_prefix(redis_url, settings["redis"]["key_prefix"])


def drop_key_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (a benchmark's or a test's own keys)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()
