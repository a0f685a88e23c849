"""Security on the real app (local Ray + Serve, real Redis/Postgres/edge index): tenants a and b never see
each other's data through any read path, scopes hold, and hostile filter values are inert or refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.timeout(300)]

HOSTILE = ["' OR 1=1 --", "*", "%", "_", "\\", "a'; DROP TABLE episodes; --", "$1", ")) OR ((1=1"]


@pytest.fixture(scope="module")
def data(app_server: AppServer) -> dict[str, Any]:
    """Both tenants write into the SAME agent and session names; each content carries its tenant's mark."""
    run = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"run": run, "ids": {"a": [], "b": []}}
    for who, key in (("a", "a_rw"), ("b", "b_rw")):
        with app_server.client(key) as c:
            mark = f"secret{who}{run}"
            content = f"harbor budget {mark} turn"
            eps = [
                {"agent_id": "agent", "session_id": f"shared-{run}", "content": f"{content} {i}",
                 "metadata": {"topic": "money"}}
                for i in range(4)
            ]  # fmt: skip
            r = c.post("/v1/episodes/batch", json={"episodes": eps})
            assert r.status_code == 201, r.text
            out["ids"][who] += r.json()["ids"]
            r = c.post("/v1/memories", json={"agent_id": "agent", "content": f"harbor budget memory {mark}"})
            assert r.status_code == 201, r.text
            out["ids"][who].append(r.json()["id"])
            r = c.post(
                "/v1/transcripts",
                json={"agent_id": "agent", "session_id": f"neg-{run}", "participants": ["x", "y"],
                      "turns": [{"speaker": "x", "content": f"harbor offer {mark}"}]},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            out["ids"][who].append(r.json()["transcript"]["id"])
            r = c.put("/v1/agents/agent/scratchpad/plan", json={"value": {"note": mark}, "ttl_s": 600})
            assert r.status_code == 200, r.text
    return out


def foreign(text: str, data: dict[str, Any], me: str) -> list[str]:
    other = "b" if me == "a" else "a"
    tokens = [f"secret{other}{data['run']}", *data["ids"][other]]
    return [t for t in tokens if t in text]


def reads(run: str) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]:
    search = {"query": f"harbor budget secreta{run} secretb{run}", "k": 50}
    return [
        ("GET", "/v1/episodes", {"session_id": f"shared-{run}"}, None),
        ("GET", "/v1/episodes", {"agent_id": "agent", "limit": 500}, None),
        ("GET", f"/v1/sessions/shared-{run}/context", {"read_preference": "redis_first"}, None),
        ("GET", f"/v1/sessions/shared-{run}/context", {"read_preference": "postgres_only"}, None),
        ("GET", "/v1/memories", {"agent_id": "agent", "limit": 500}, None),
        ("GET", "/v1/agents/agent/scratchpad", None, None),
        ("GET", "/v1/agents/agent/scratchpad/plan", None, None),
        *[("POST", "/v1/search", None, {**search, "mode": m}) for m in ("hybrid", "lexical", "vector")],
        ("POST", "/v1/search", None, {**search, "filters": {"session_id": f"shared-{run}"}}),
        ("POST", "/v1/search", None, {**search, "filters": {"metadata": {"topic": "money"}}}),
        ("POST", "/v1/context", None, {"query": search["query"], "token_budget": 4000}),
        ("POST", "/v1/context", None, {"query": search["query"], "filters": {"session_id": f"shared-{run}"}}),
    ]


@pytest.mark.parametrize("me", ["a", "b"])
def test_no_read_path_returns_the_other_tenants_data(
    app_server: AppServer, data: dict[str, Any], me: str
) -> None:
    mine = f"secret{me}{data['run']}"
    with app_server.client(f"{me}_rw") as c:
        seen_own = 0
        for method, path, params, body in reads(data["run"]):
            r = c.request(method, path, params=params, json=body)
            assert r.status_code == 200, (method, path, body, r.text)
            assert not foreign(r.text, data, me), (method, path, body, r.text[:800])
            seen_own += mine in r.text
        assert seen_own >= 8  # the reads did find the caller's own data
        other = "b" if me == "a" else "a"
        for ident in data["ids"][other]:
            for kind in ("episodes", "memories", "transcripts"):
                r = c.get(f"/v1/{kind}/{ident}")
                assert r.status_code == 404, r.text
            r = c.delete(f"/v1/episodes/{ident}")
            assert r.status_code == 404, r.text


def test_scopes_hold_on_the_real_app(app_server: AppServer) -> None:
    with httpx.Client(base_url=app_server.base_url, timeout=30) as anon:
        assert anon.post("/v1/search", json={"query": "x"}).status_code == 401
        r = anon.get("/v1/episodes", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    with app_server.client("a_ro") as c:
        r = c.post("/v1/episodes", json={"agent_id": "x", "session_id": "y", "content": "z"})
        assert r.status_code == 403 and r.json()["error"]["scope"] == "memory:write"
    with app_server.client("a_rw") as c:
        r = c.get("/v1/admin/consolidations")
        assert r.status_code == 403 and r.json()["error"]["scope"] == "admin"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_filter_values_are_plain_values(
    app_server: AppServer, data: dict[str, Any], hostile: str
) -> None:
    with app_server.client("a_rw") as c:
        for flt in (
            {"session_id": hostile},
            {"agent_id": hostile},
            {"kind": hostile},
            {"metadata": {"t": hostile}},
        ):
            for path in ("/v1/search", "/v1/context"):
                r = c.post(path, json={"query": "harbor budget", "filters": flt})
                assert r.status_code == 200, (path, flt, r.text)
                assert "secret" not in r.text, (path, flt, r.text[:500])  # nothing matches these values
        for param in ("session_id", "agent_id"):
            r = c.get("/v1/episodes", params={param: hostile})
            assert r.status_code == 200 and r.json()["items"] == [], r.text
        r = c.get(f"/v1/sessions/{hostile.replace('/', '')}/context")
        assert r.status_code in (200, 404), r.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/search", {"query": "x", "filters": {"session_id": "s\x00"}}, "filters.session_id"),
        ("/v1/search", {"query": "x", "filters": {"agent_id": "a\x00"}}, "filters.agent_id"),
        ("/v1/context", {"query": "x", "filters": {"session_id": "s\x00"}}, "filters.session_id"),
        ("/v1/search", {"query": "x", "filters": {"session_id": "s" * 10_000}}, "filters.session_id"),
        ("/v1/search", {"query": "x" * 100_000}, "query"),
        ("/v1/episodes", {"agent_id": "a\x00", "session_id": "s", "content": "c"}, "agent_id"),
        ("/v1/episodes", {"agent_id": "a", "session_id": "s", "content": "c\x00"}, "episode.content"),
        ("/v1/episodes", {"agent_id": "a", "session_id": "s", "content": "c",
                          "metadata": {"k": "v\x00"}}, "episode.metadata"),
        ("/v1/memories", {"agent_id": "a", "content": "c", "metadata": {"k\x00": 1}}, "memory.metadata"),
    ],
)  # fmt: skip
def test_nul_and_oversized_values_are_4xx_naming_the_field(
    app_server: AppServer, path: str, body: dict[str, Any], field: str
) -> None:
    with app_server.client("a_rw") as c:
        r = c.post(path, json=body)
    assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
    assert r.json()["error"]["field"] == field, r.text


def test_nul_in_a_query_is_harmless(app_server: AppServer) -> None:
    with app_server.client("a_rw") as c:
        for path in ("/v1/search", "/v1/context"):
            r = c.post(path, json={"query": "harbor\x00budget"})
            assert r.status_code == 200, r.text


def test_hostile_metadata_key_in_a_filter_is_a_422(app_server: AppServer, data: dict[str, Any]) -> None:
    with app_server.client("a_rw") as c:
        r = c.post("/v1/search", json={"query": "harbor", "filters": {"metadata": {"a' OR '1'='1": "x"}}})
    assert r.status_code == 422, r.text


# Found by tests/serve/app/test_fuzz_openapi.py (exact requests): were 500s before the error-pickling fix.
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/search", {"k": 38, "tiers": None, "mode": "hybrid", "query": "\ud9e6\udda7\u00d0+\u0018",
                        "filters": {"metadata": {"": True, "\u00abp;\u00c4p\u00ab\u0001": True}}}),
        ("/v1/context", {"query": "edge-writer", "filters": {"created_after": "1088-09-24T14:48:26.420088Z",
                         "metadata": {"\u00ba": 0.8}}}),
    ],
)  # fmt: skip
def test_fuzz_found_invalid_metadata_filter_keys_are_422(
    app_server: AppServer, data: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body)  # ASCII escapes, as the fuzzer sent them (lone surrogates included)
    with app_server.client("a_admin") as c:
        r = c.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].startswith("filters.metadata"), r.text
