"""The HTTP layer over in-memory fakes: auth, scopes, validation errors naming fields, error bodies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from core.auth import ApiKeyAuthenticator
from core.service import HybridMemoryService
from core.settings import ApiKeySpec, load_settings
from deployments.http.api import create_api
from deployments.http.deps import ApiContext
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore

KEYS = {
    "rw": ("tenant-a", ["memory:read", "memory:write"]),
    "ro": ("tenant-a", ["memory:read"]),
    "other": ("tenant-b", ["memory:read", "memory:write"]),
    "admin": ("tenant-a", ["admin"]),
}


def _specs() -> list[ApiKeySpec]:
    return [
        ApiKeySpec(key_sha256=ApiKeySpec.hash_key(k), tenant_id=t, scopes=s) for k, (t, s) in KEYS.items()
    ]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        {"limits": {"max_content_chars": 100, "max_batch_items": 3, "max_request_bytes": 4096}}
    )

    @contextlib.asynccontextmanager
    async def ctx() -> AsyncIterator[ApiContext]:
        service = HybridMemoryService(
            working=InMemoryWorkingStore(), episodic=InMemoryEpisodicStore(), settings=settings
        )
        yield ApiContext(settings=settings, service=service, auth=ApiKeyAuthenticator(_specs()))

    app = create_api(ctx, max_body_bytes=settings.limits.max_request_bytes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


EP = {"agent_id": "a1", "session_id": "s1", "content": "hello there"}


async def test_missing_and_invalid_key_are_401(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/episodes", json=EP)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    r = await client.post("/v1/episodes", json=EP, headers=h("nope"))
    assert r.status_code == 401
    r = await client.post("/v1/episodes", json=EP, headers={"X-API-Key": "rw"})
    assert r.status_code == 201


async def test_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/episodes", json=EP, headers=h("ro"))
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "forbidden",
        "message": "this API key lacks the 'memory:write' scope",
        "scope": "memory:write",
    }
    # admin implies every scope
    assert (await client.post("/v1/episodes", json=EP, headers=h("admin"))).status_code == 201


async def test_tenant_comes_from_key_not_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/episodes", json={**EP, "tenant_id": "tenant-b"}, headers=h("rw"))
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "tenant_id"
    r = await client.post("/v1/episodes", json=EP, headers=h("rw"))
    assert r.json()["tenant_id"] == "tenant-a"
    eid = r.json()["id"]
    assert (await client.get(f"/v1/episodes/{eid}", headers=h("other"))).status_code == 404
    ctx = await client.get("/v1/sessions/s1/context", headers=h("other"))
    assert ctx.json()["episodes"] == []


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/episodes", json={"agent_id": "a1", "session_id": "s1"}, headers=h("rw"))
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "content"
    r = await client.post("/v1/episodes", json={**EP, "content": "x" * 101}, headers=h("rw"))
    assert r.status_code == 413
    assert r.json()["error"]["field"] == "episode.content"
    batch = {"episodes": [EP, {**EP, "content": 5}]}
    r = await client.post("/v1/episodes/batch", json=batch, headers=h("rw"))
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "episodes[1].content"
    r = await client.post("/v1/episodes/batch", json={"episodes": [EP] * 4}, headers=h("rw"))
    assert r.status_code == 413
    assert r.json()["error"]["field"] == "episodes"
    r = await client.put("/v1/agents/a1/scratchpad/k", json={"value": 1, "ttl_s": 0}, headers=h("rw"))
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "ttl_s"


async def test_malformed_json_and_oversized_body(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/episodes", content=b"{not json", headers={**h("rw"), "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"
    # Found by the schemathesis run: a body that is not UTF-8 was a 400 the OpenAPI did not document.
    r = await client.post(
        "/v1/episodes", content=b"\xff", headers={**h("rw"), "content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "body", r.text
    big = json.dumps({**EP, "metadata": {"x": "y" * 5000}})
    r = await client.post(
        "/v1/episodes", content=big, headers={**h("rw"), "content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["field"] == "body"


async def test_batch_rejected_writes_nothing(client: httpx.AsyncClient) -> None:
    batch = {
        "episodes": [{**EP, "session_id": "atomic"}, {**EP, "session_id": "atomic", "content": "x" * 101}]
    }
    assert (await client.post("/v1/episodes/batch", json=batch, headers=h("rw"))).status_code == 413
    r = await client.get("/v1/episodes", params={"session_id": "atomic"}, headers=h("rw"))
    assert r.json()["items"] == []


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = await client.get("/healthz")
    assert len(r.headers["X-Request-ID"]) == 32
    assert float(r.headers["X-Response-Time-ms"]) >= 0
    r = await client.get("/healthz", headers={"X-Request-ID": "bad\tid"})
    assert r.headers["X-Request-ID"] != "bad\tid" and len(r.headers["X-Request-ID"]) == 32
    big = json.dumps({**EP, "metadata": {"x": "y" * 5000}})
    headers = {**h("rw"), "content-type": "application/json", "X-Request-ID": "r-413"}
    r = await client.post("/v1/episodes", content=big, headers=headers)
    assert r.status_code == 413 and r.headers["X-Request-ID"] == "r-413"
    r = await client.get("/v1/episodes/not-a-uuid", headers={**h("rw"), "X-Request-ID": "r-4xx"})
    assert r.status_code in (404, 422) and r.headers["X-Request-ID"] == "r-4xx"


async def test_scratchpad_and_memory_crud(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/v1/agents/a1/scratchpad/plan", json={"value": {"step": 2}, "ttl_s": 60}, headers=h("rw")
    )
    assert r.status_code == 200
    assert (await client.get("/v1/agents/a1/scratchpad/plan", headers=h("rw"))).json()["value"] == {"step": 2}
    page = (await client.get("/v1/agents/a1/scratchpad", headers=h("rw"))).json()
    assert [e["key"] for e in page["items"]] == ["plan"]
    assert (await client.delete("/v1/agents/a1/scratchpad/plan", headers=h("rw"))).status_code == 204
    assert (await client.get("/v1/agents/a1/scratchpad/plan", headers=h("rw"))).status_code == 404

    r = await client.post(
        "/v1/memories", json={"id": "m1", "agent_id": "a1", "content": "likes tea"}, headers=h("rw")
    )
    assert r.status_code == 201
    mid = r.json()["id"]
    r = await client.patch(f"/v1/memories/{mid}", json={"content": "likes green tea"}, headers=h("rw"))
    assert r.json()["content"] == "likes green tea"
    assert (await client.get(f"/v1/memories/{mid}", headers=h("other"))).status_code == 404
    assert (await client.delete(f"/v1/memories/{mid}", headers=h("rw"))).status_code == 204
    assert (await client.get(f"/v1/memories/{mid}", headers=h("rw"))).status_code == 404


async def test_episode_pagination(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.post(
            "/v1/episodes",
            json={**EP, "session_id": "pg", "id": f"p{i}", "created_at": f"2024-01-0{i + 1}T00:00:00Z"},
            headers=h("rw"),
        )
    seen, cursor = [], None
    while True:
        params = {"session_id": "pg", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/episodes", params=params, headers=h("rw"))).json()
        seen += [e["created_at"][:10] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"2024-01-0{i + 1}" for i in range(5)]
    assert (await client.get("/v1/episodes", params={"cursor": "%%%"}, headers=h("rw"))).status_code == 422


async def test_scratchpad_keys_may_contain_slashes(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/agents/a1/scratchpad/plan%2Fstep", json={"value": 3}, headers=h("rw"))
    assert r.status_code == 200
    assert r.json()["key"] == "plan/step"
    assert (await client.get("/v1/agents/a1/scratchpad/plan/step", headers=h("rw"))).json()["value"] == 3


async def test_unhandled_errors_are_counted_as_500_with_their_route() -> None:
    from fastapi import APIRouter

    from core.metrics import render_latest

    boom = APIRouter()

    @boom.get("/v1/boom-for-test")
    async def fail() -> None:
        raise RuntimeError("boom")

    @contextlib.asynccontextmanager
    async def no_ctx() -> AsyncIterator[ApiContext]:
        raise AssertionError("not opened: ASGITransport runs no lifespan")
        yield  # pragma: no cover

    def count() -> float:
        wanted = ("hybridmem_http_requests_total{", 'route="/v1/boom-for-test"', 'status="500"')
        for line in render_latest().decode().splitlines():
            if line.startswith(wanted[0]) and all(part in line for part in wanted[1:]):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    app = create_api(no_ctx, extra_routers=(boom,))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    before = count()
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/v1/boom-for-test")
    assert r.status_code == 500
    assert count() == before + 1


async def test_a_streamed_body_over_the_limit_is_refused_while_it_streams(client: httpx.AsyncClient) -> None:
    """A chunked body declares no length: it is counted as it arrives and refused past the limit (4096
    bytes here) with 413, without being read to the end."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1
            yield b" " * 1024

    r = await client.post(
        "/v1/episodes", content=chunks(), headers={**h("rw"), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "limit_exceeded",
        "message": "request body exceeds 4096 bytes",
        "field": "body",
    }
    assert sent < 64  # refused while streaming
    small = await client.post(
        "/v1/episodes",
        content=_stream(json.dumps(EP).encode()),
        headers={**h("rw"), "Content-Type": "application/json"},
    )
    assert small.status_code == 201, small.text  # a chunked body under the limit is read as usual


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i : i + 7]


@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer not-a-key"}])
async def test_an_unauthenticated_body_is_refused_before_it_is_read(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(3):
            sent += 1
            yield b'{"agent_id": "a1", '

    r = await client.post(
        "/v1/episodes", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthenticated"
    assert sent == 0  # not a byte of it was read


async def test_readyz_is_200_while_the_app_can_serve_and_503_when_no_store_answers() -> None:
    """Orchestrators take a replica out of service on 503: a store outage every replica shares is not
    cured by that, so readiness stays 200 (the outage named) until nothing answers at all."""
    settings = load_settings({})
    working, episodic = InMemoryWorkingStore(), InMemoryEpisodicStore()

    @contextlib.asynccontextmanager
    async def ctx() -> AsyncIterator[ApiContext]:
        service = HybridMemoryService(working=working, episodic=episodic, settings=settings)
        yield ApiContext(settings=settings, service=service, auth=ApiKeyAuthenticator(_specs()))

    app = create_api(ctx)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        r = await c.get("/readyz")
        assert (r.status_code, r.json()) == (
            200,
            {"status": "ok", "stores": {"redis": "ok", "postgres": "ok"}},
        )
        working.available = False
        r = await c.get("/readyz")
        assert r.status_code == 200 and "Retry-After" not in r.headers
        assert r.json() == {
            "status": "degraded",
            "stores": {"redis": "unavailable: redis is unavailable: fake outage", "postgres": "ok"},
        }
        episodic.available = False
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert r.json()["status"] == "degraded"
        working.available = episodic.available = True
        assert (await c.get("/readyz")).json()["status"] == "ok"
