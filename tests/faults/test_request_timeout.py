"""``request_timeout_s`` end to end: a write stuck behind a Postgres lock is answered 504 in time.

The slow path is real: another session holds a lock on the episodes table that blocks inserts, so the
API's commit waits in Postgres. The timed-out request is cancelled; replaying it with the same id once
the lock is gone stores the episode exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from core.auth import ApiKeyAuthenticator
from core.resources import open_resources
from core.service import HybridMemoryService
from core.settings import ApiKeySpec, load_settings
from deployments.http.api import create_api
from deployments.http.deps import ApiContext

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TIMEOUT_S = 0.5
KEY = "timeout-test-key"


@pytest.fixture
async def client(
    redis_url: str, pg_database: str, key_prefix: str, tenant: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        {
            "env": "test",
            "redis": {"url": redis_url, "key_prefix": key_prefix},
            "postgres": {"dsn": pg_database, "pool_max_size": 2},
            "request_timeout_s": TIMEOUT_S,
        }
    )
    spec = ApiKeySpec(key_sha256=ApiKeySpec.hash_key(KEY), tenant_id=tenant)

    @contextlib.asynccontextmanager
    async def context() -> AsyncIterator[ApiContext]:
        async with open_resources(settings) as res:
            service = HybridMemoryService(working=res.working, episodic=res.episodic, settings=settings)
            yield ApiContext(settings=settings, service=service, auth=ApiKeyAuthenticator([spec]))

    app = create_api(context, request_timeout_s=settings.request_timeout_s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
            yield c


@contextlib.asynccontextmanager
async def inserts_blocked(dsn: str) -> AsyncIterator[None]:
    """Hold a lock that lets readers in but makes every INSERT into episodes wait."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE episodes IN SHARE MODE")
            yield
    finally:
        await conn.close()


async def test_slow_write_is_answered_504_then_a_replay_stores_it_once(
    client: httpx.AsyncClient, pg_database: str
) -> None:
    episode = {"id": "slow-1", "agent_id": "a1", "session_id": "s-timeout", "content": "stuck behind a lock"}
    async with inserts_blocked(pg_database):
        r = await client.post("/v1/episodes", json=episode)
        # cut at the budget: Postgres's own statement timeout (10 s) would have answered 503
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "request_timeout"
        assert "request_timeout_s" in r.json()["error"]["message"]
        assert r.headers.get("x-request-id")  # answered inside the request-id middleware
        # reads are not held up by the lock, and the budget leaves fast requests alone
        assert (await client.get("/v1/episodes", params={"session_id": "s-timeout"})).status_code == 200

    replay = await client.post("/v1/episodes", json=episode)
    assert replay.status_code == 201
    stored = (await client.get("/v1/episodes", params={"session_id": "s-timeout"})).json()["items"]
    assert [e["content"] for e in stored] == ["stuck behind a lock"]
