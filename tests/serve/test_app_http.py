"""The real app on a local Ray + Serve, over HTTP: write an episode and read it back, with auth."""

from __future__ import annotations

import uuid

import pytest

from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def test_readyz_reports_every_store(app_server: AppServer) -> None:
    with app_server.client() as c:
        body = c.get("/readyz").json()
    assert body == {"status": "ok", "stores": {"redis": "ok", "postgres": "ok", "qdrant": "ok"}}


def test_episode_round_trip_with_auth(app_server: AppServer) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    ep = {"agent_id": "planner", "session_id": session, "content": "The user prefers window seats."}
    with app_server.client() as anon:
        assert anon.post("/v1/episodes", json=ep).status_code == 401
    with app_server.client("a_ro") as ro:
        assert ro.post("/v1/episodes", json=ep).status_code == 403
    with app_server.client("a_rw") as rw:
        r = rw.post("/v1/episodes", json=ep)
        assert r.status_code == 201, r.text
        assert r.headers["X-Request-ID"]
        created = r.json()
        assert created["tenant_id"] == app_server.tenants["a"]
        ctx = rw.get(f"/v1/sessions/{session}/context").json()
        assert [e["content"] for e in ctx["episodes"]] == [ep["content"]]
        assert ctx["source"] == "redis"
        pg = rw.get(f"/v1/sessions/{session}/context", params={"read_preference": "postgres_only"}).json()
        assert [e["id"] for e in pg["episodes"]] == [created["id"]]
    with app_server.client("b_rw") as other:
        assert other.get(f"/v1/sessions/{session}/context").json()["episodes"] == []
        assert other.get(f"/v1/episodes/{created['id']}").status_code == 404


def test_bad_input_is_4xx_naming_the_field(app_server: AppServer) -> None:
    with app_server.client("a_rw") as rw:
        r = rw.post("/v1/episodes", json={"agent_id": "a", "session_id": "s", "content": ""})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "content"
        r = rw.post("/v1/episodes", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_batch_and_scratchpad(app_server: AppServer) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    batch = {
        "episodes": [
            {"id": f"b{i}", "agent_id": "a", "session_id": session, "content": f"turn {i}"} for i in range(3)
        ]
    }
    with app_server.client("a_rw") as rw:
        first = rw.post("/v1/episodes/batch", json=batch).json()
        again = rw.post("/v1/episodes/batch", json=batch).json()
        assert (first["inserted"], again["inserted"], again["duplicates"]) == (3, 0, 3)
        assert (
            rw.put("/v1/agents/a/scratchpad/goal", json={"value": "book flight", "ttl_s": 60}).status_code
            == 200
        )
        assert rw.get("/v1/agents/a/scratchpad/goal").json()["value"] == "book flight"


def test_openapi_docs_served(app_server: AppServer) -> None:
    with app_server.client() as c:
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/episodes", "/v1/search", "/v1/context", "/readyz"} <= set(paths)


def test_openai_compatible_embeddings(app_server: AppServer) -> None:
    with app_server.client("a_ro") as ro:
        r = ro.post("/v1/embeddings", json={"input": ["hello", "world"], "model": "all-MiniLM-L6-v2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list"
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert len(body["data"][0]["embedding"]) == 384
        info = ro.get("/v1/embeddings/model").json()
        assert info["dimension"] == 384
        assert ro.post("/v1/embeddings", json={"input": []}).status_code == 422
    with app_server.client() as anon:
        assert anon.post("/v1/embeddings", json={"input": "x"}).status_code == 401
