"""The tenant-isolation property on the real stores: Redis, Postgres and the embedded vector engine.

The same random writes and reads as tests/unit/test_tenant_isolation_property.py, through the Ingress's
HTTP app over the service and the retriever the deployments build (Postgres BM25, engine lexical
search, the session buffer in Redis). Each example gets tenants of its own, and one ledger spans the
run: what an earlier example wrote stays in the stores and still counts as foreign.

25 examples in ``make test``; ``HYBRIDMEM_ISOLATION_EXAMPLES=500`` for the long run whose figure is in
docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.resources import open_resources
from core.retrieval.build import build_hybrid_retriever
from core.service import HybridMemoryService
from core.settings import Settings, load_settings
from core.stores.edge_index import EdgeVectorIndex
from tests.conftest import new_key_prefix
from tests.unit.test_scopes import ingress_app
from tests.unit.test_tenant_isolation_property import (
    TENANTS,
    HashedBagOfWords,
    World,
    read,
    run_example,
    tenant_keys,
    write,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("HYBRIDMEM_ISOLATION_EXAMPLES", "25"))
LEDGER: dict[str, str] = {}  # marker or id -> real tenant, for the whole run


@pytest.fixture(scope="module")
def real_settings(pg_database: str, redis_url: str) -> Any:
    prefix = new_key_prefix("iso")
    yield load_settings(
        {"env": "test", "postgres": {"dsn": pg_database}, "redis": {"url": redis_url, "key_prefix": prefix}}
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.asynccontextmanager
async def real_world(app_settings: Settings, vectors: EdgeVectorIndex) -> AsyncIterator[World]:
    run = uuid.uuid4().hex[:10]
    real = {t: f"{t}-{run}" for t in TENANTS}
    embedder = HashedBagOfWords()
    async with open_resources(app_settings) as res:
        service = HybridMemoryService(
            working=res.working,
            episodic=res.episodic,
            vectors=vectors,
            embedder=embedder,
            settings=app_settings,
        )
        retriever = build_hybrid_retriever(app_settings, resources=res, vectors=vectors, embedder=embedder)
        app = ingress_app(app_settings, service, tenant_keys(real), retriever=retriever, embedder=embedder)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield World(client, real=real, owner=LEDGER)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure message is enough
    suppress_health_check=list(HealthCheck),
)
@given(
    writes=st.lists(write, min_size=3, max_size=14),
    reads=st.lists(read, min_size=5, max_size=25),
)
async def test_no_response_carries_another_tenants_data_on_real_stores(
    real_settings: Settings, writes: list[tuple[Any, ...]], reads: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory(prefix="hm-iso-real-") as tmp:
        vectors = await EdgeVectorIndex.open(Path(tmp) / "edge", settings=real_settings.qdrant)
        try:
            async with real_world(real_settings, vectors) as w:
                await run_example(w, writes, reads)
        finally:
            await vectors.close()
