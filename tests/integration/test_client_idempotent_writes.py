"""A write answered 503 after its durable commit, retried by the client, is stored once.

End to end over HTTP: the client package → the Ingress's app (same routers, auth, error mapping) → the
service with the real Postgres, the real Redis and the real embedding model; the semantic tier is a
Qdrant server that is down (qdrant-client against a closed port), so every memory write commits in
Postgres, then fails its vector upsert and answers 503 — and the client retries it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hybridmem_client import AsyncHybridMemClient, RetryPolicy, ServiceUnavailable

from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.service import HybridMemoryService
from core.settings import EmbeddingSettings, load_settings
from core.stores.postgres_episodic import PostgresEpisodeStore
from core.stores.redis_working import RedisWorkingStore
from core.stores.vector_factory import open_vector_index
from tests.serve.conftest import free_port
from tests.unit.test_scopes import ingress_app

pytestmark = pytest.mark.integration

KEY = "key-idempotent-writes"
RETRY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)


@pytest.fixture(scope="module")
def model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    yield embedder
    embedder.close()


class Counting(httpx.AsyncBaseTransport):
    """The app's ASGI transport, counting what reaches it (the retries are the client's own)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def app(
    redis_client: aioredis.Redis,
    pg_pool: asyncpg.Pool,
    key_prefix: str,
    tenant: str,
    model: SentenceTransformerEmbedder,
) -> AsyncIterator[Counting]:
    settings = load_settings({"qdrant": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2}})
    async with open_vector_index(settings) as vectors:  # server mode: qdrant-client, nobody listening
        service = HybridMemoryService(
            working=RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=50, buffer_ttl_s=600),
            episodic=PostgresEpisodeStore(pg_pool),
            settings=settings,
            vectors=vectors,
            embedder=model,
        )
        api = ingress_app(settings, service, {KEY: (tenant, ["memory:read", "memory:write"])})
        async with api.router.lifespan_context(api):
            yield Counting(httpx.ASGITransport(app=api))


async def _stored(pool: asyncpg.Pool, tenant: str, content: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM memory_records WHERE tenant_id = $1 AND content = $2", tenant, content
    )
    return count


async def test_a_memory_retried_after_a_503_past_its_commit_is_stored_once(
    app: Counting, pg_pool: asyncpg.Pool, tenant: str
) -> None:
    content = f"The {uuid.uuid4().hex[:8]} warehouse gate code is 4471."
    async with AsyncHybridMemClient("http://hm.test", KEY, transport=app, retry=RETRY) as hm:
        with pytest.raises(ServiceUnavailable) as info:
            await hm.create_memory(agent_id="a1", content=content)
    assert "qdrant" in info.value.message
    assert len(app.bodies) == 3  # the first try and two retries all reached the app ...
    assert await _stored(pg_pool, tenant, content) == 1  # ... and each committed the same row

    # The control: the same three requests without an idempotency key (what the client sent before)
    # store three copies, so the count above is the client's doing.
    control = f"The {uuid.uuid4().hex[:8]} loading dock opens at six."
    async with httpx.AsyncClient(transport=app, base_url="http://hm.test") as raw:
        for _ in range(3):
            r = await raw.post(
                "/v1/memories",
                json={"agent_id": "a1", "content": control},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert r.status_code == 503
    assert await _stored(pg_pool, tenant, control) == 3


async def test_a_batch_retried_after_a_503_is_stored_once_per_item(
    app: Counting, pg_pool: asyncpg.Pool, tenant: str
) -> None:
    texts = [f"Batch fact {i} about {uuid.uuid4().hex[:8]}." for i in range(3)]
    async with AsyncHybridMemClient("http://hm.test", KEY, transport=app, retry=RETRY) as hm:
        with pytest.raises(ServiceUnavailable):
            await hm.create_memories([{"agent_id": "a1", "content": t} for t in texts])
    assert len(app.bodies) == 3
    assert [await _stored(pg_pool, tenant, t) for t in texts] == [1, 1, 1]
