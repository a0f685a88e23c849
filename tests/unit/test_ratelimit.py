"""Token bucket semantics and the 429 + Retry-After mapping over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from core.auth import ApiKeyAuthenticator
from core.errors import RateLimited
from core.ratelimit import TokenBucketLimiter
from core.service import HybridMemoryService
from core.settings import ApiKeySpec, load_settings
from deployments.http.api import create_api
from deployments.http.deps import ApiContext
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore


def test_bucket_allows_burst_then_refills() -> None:
    lim = TokenBucketLimiter(rate_per_s=2.0, burst=3)
    for _ in range(3):
        lim.check("k", now=0.0)
    with pytest.raises(RateLimited) as info:
        lim.check("k", now=0.0)
    assert info.value.retry_after_s == pytest.approx(0.5)
    lim.check("k", now=0.5)  # one token back after 1/rate seconds
    lim.check("other", now=0.0)  # keys are independent


async def test_http_429_with_retry_after() -> None:
    settings = load_settings({"auth": {"rate_limit_per_s": 1.0, "rate_limit_burst": 2}})
    spec = ApiKeySpec(key_sha256=ApiKeySpec.hash_key("k1"), tenant_id="t", name="k1")

    @contextlib.asynccontextmanager
    async def ctx() -> AsyncIterator[ApiContext]:
        svc = HybridMemoryService(
            working=InMemoryWorkingStore(), episodic=InMemoryEpisodicStore(), settings=settings
        )
        yield ApiContext(
            settings=settings,
            service=svc,
            auth=ApiKeyAuthenticator([spec]),
            limiter=TokenBucketLimiter(1.0, 2),
        )

    app = create_api(ctx)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        codes = [(await c.get("/v1/whoami", headers={"X-API-Key": "k1"})).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await c.get("/v1/whoami", headers={"X-API-Key": "k1"})
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
