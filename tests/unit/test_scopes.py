"""Every route in the OpenAPI declares one scope and refuses a missing key, a bad key and a key without it.

The app is the Ingress's (create_api + search, admin and embeddings routers) over in-memory fakes; routes
whose backends are absent still prove the point, because authentication and scope checks run before the
handler does.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from core.auth import ApiKeyAuthenticator
from core.service import HybridMemoryService
from core.settings import ApiKeySpec, Settings, load_settings
from deployments.http.api import create_api
from deployments.http.deps import ApiContext
from deployments.http.errors import is_openai_route
from deployments.http.routers import ingress_routers
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore

# raw key -> (tenant, scopes)
KEYS: dict[str, tuple[str, list[Any]]] = {
    "key-read": ("tenant-a", ["memory:read"]),
    "key-write": ("tenant-a", ["memory:write"]),
    "key-rw": ("tenant-a", ["memory:read", "memory:write"]),
    "key-admin": ("tenant-a", ["admin"]),
}
# A key that holds every scope but the one a route needs.
LACKING = {"memory:read": "key-write", "memory:write": "key-read", "admin": "key-rw"}
PUBLIC = {"/healthz", "/readyz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"}


def specs(keys: dict[str, tuple[str, list[Any]]]) -> list[ApiKeySpec]:
    return [
        ApiKeySpec(key_sha256=ApiKeySpec.hash_key(k), tenant_id=t, scopes=s, name=k)
        for k, (t, s) in keys.items()
    ]


def ingress_app(
    settings: Settings, service: HybridMemoryService, keys: dict[str, tuple[str, list[Any]]], **ctx_kw: Any
) -> FastAPI:
    """The Ingress's FastAPI app (same routers, same auth) over the given service and keys."""

    @contextlib.asynccontextmanager
    async def ctx() -> AsyncIterator[ApiContext]:
        yield ApiContext(settings=settings, service=service, auth=ApiKeyAuthenticator(specs(keys)), **ctx_kw)

    return create_api(
        ctx, max_body_bytes=settings.limits.max_request_bytes, extra_routers=ingress_routers(settings)
    )


def expected_scope(method: str, path: str) -> str:
    """The policy: admin under /v1/admin, reads (GET and the POST query endpoints) read, the rest write."""
    if path.startswith("/v1/admin"):
        return "admin"
    if method == "GET" or path in {"/v1/search", "/v1/context"} or path.startswith("/v1/embeddings"):
        return "memory:read"
    return "memory:write"


def declared_scopes(route: APIRoute) -> set[str]:
    """Scopes named by ``require(scope)`` dependencies anywhere in the route's dependency tree."""
    found: set[str] = set()
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        call = dep.call
        if call is not None and getattr(call, "__qualname__", "").startswith("require.<locals>"):
            cells = dict(zip(call.__code__.co_freevars, call.__closure__ or (), strict=True))
            found.add(cells["scope"].cell_contents)
        stack.extend(dep.dependencies)
    return found


@pytest.fixture(scope="module")
def app() -> FastAPI:
    settings = load_settings({"limits": {"max_request_bytes": 65536}})
    service = HybridMemoryService(
        working=InMemoryWorkingStore(), episodic=InMemoryEpisodicStore(), settings=settings
    )
    return ingress_app(settings, service, KEYS)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def operations(app: FastAPI) -> list[tuple[str, str]]:
    spec = app.openapi()
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"} and path not in PUBLIC
    ]


def concrete(path: str) -> str:
    """Fill path parameters with valid values (ids are UUIDs; names are short strings)."""
    return (
        path.replace("{episode_id}", str(uuid.uuid4()))
        .replace("{transcript_id}", str(uuid.uuid4()))
        .replace("{memory_id}", str(uuid.uuid4()))
        .replace("{run_id}", str(uuid.uuid4()))
        .replace("{session_id}", "s1")
        .replace("{agent_id}", "a1")
        .replace("{key}", "k1")
    )


def test_every_route_is_in_the_openapi_and_declares_exactly_its_scope(app: FastAPI) -> None:
    listed = set(operations(app))
    assert len(listed) >= 25, sorted(listed)  # every router is mounted
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC | {"/metrics"}:
            continue
        for method in route.methods or ():
            assert (method, route.path) in listed, f"{method} {route.path} is missing from the OpenAPI"
            assert declared_scopes(route) == {expected_scope(method, route.path)}, f"{method} {route.path}"


async def test_every_route_refuses_missing_bad_and_unscoped_keys(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    checked = 0
    for method, path in operations(app):
        url = concrete(path)
        body: dict[str, Any] | None = {} if method in {"POST", "PUT", "PATCH"} else None
        openai = is_openai_route(path)  # OpenAI's error shape there (deployments/http/errors.py)
        r = await client.request(method, url, json=body)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == ("invalid_api_key" if openai else "unauthenticated")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        for bad in (
            {"Authorization": "Bearer not-a-key"},
            {"X-API-Key": "key-rw "},
            {"Authorization": "key-rw"},
        ):
            r = await client.request(method, url, json=body, headers=bad)
            assert r.status_code == 401, (method, path, bad, r.text)
        scope = expected_scope(method, path)
        r = await client.request(
            method, url, json=body, headers={"Authorization": f"Bearer {LACKING[scope]}"}
        )
        assert r.status_code == 403, (method, path, r.text)
        message = f"this API key lacks the {scope!r} scope"
        assert r.json()["error"] == (
            {"message": message, "type": "invalid_request_error", "param": None, "code": "forbidden"}
            if openai
            else {"code": "forbidden", "message": message, "scope": scope}
        )
        checked += 1
    assert checked >= 25


async def test_public_endpoints_need_no_key(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_right_scope_gets_past_auth(client: httpx.AsyncClient) -> None:
    """The matching scope (and admin, which implies all) is let through to validation or the handler."""
    for key in ("key-write", "key-admin"):
        r = await client.post("/v1/episodes", json={}, headers={"X-API-Key": key})
        assert r.status_code == 422, r.text
    for key in ("key-read", "key-admin"):
        r = await client.get("/v1/episodes", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
    r = await client.get("/v1/whoami", headers={"Authorization": "Bearer key-read"})
    assert r.json() == {"tenant_id": "tenant-a", "scopes": ["memory:read"], "key_name": "key-read"}
