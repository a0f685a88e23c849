"""Facts that change, over HTTP on the real app: supersedes, validity, ``as_of`` and
``include_superseded``, before and after consolidation (issue 26)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.serve.app.test_app_http import _consolidate
from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.slow]

OLD = "My hotel budget is 150 EUR a night."
NEW = "Update: my hotel budget is now 200 EUR a night."


def _search(c: httpx.Client, query: str, **body: Any) -> list[dict[str, Any]]:
    r = c.post("/v1/search", json={"query": query, "k": 10, **body})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    return hits


def _context(c: httpx.Client, query: str, **body: Any) -> str:
    r = c.post("/v1/context", json={"query": query, "token_budget": 512, **body})
    assert r.status_code == 200, r.text
    text: str = r.json()["context"]
    return text


def test_superseded_episode_leaves_search_and_context_but_stays_auditable(app_server: AppServer) -> None:
    session = f"cur-{uuid.uuid4().hex[:8]}"
    only = {"filters": {"session_id": session}}
    ep = {"agent_id": "travel", "session_id": session}
    with app_server.client("a_rw") as rw, app_server.client("a_admin") as admin:
        r = rw.post(
            "/v1/episodes/batch",
            json={
                "episodes": [
                    {**ep, "id": f"{session}-old", "content": OLD, "created_at": "2024-05-01T09:00:00Z"},
                    {**ep, "content": "Book the museum early.", "created_at": "2024-05-02T09:00:00Z"},
                    {**ep, "content": "The flight lands at 14:05.", "created_at": "2024-05-03T09:00:00Z"},
                ]
            },
        )  # fmt: skip
        assert r.status_code == 201, r.text
        old_id = r.json()["ids"][0]
        bad = rw.post("/v1/episodes", json={**ep, "content": NEW, "supersedes": ["no-such-key"]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "episode.supersedes[0]", bad.text
        r = rw.post(
            "/v1/episodes",
            json={**ep, "id": f"{session}-new", "content": NEW, "created_at": "2024-05-10T09:00:00Z",
                  "supersedes": [f"{session}-old"]},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        new_id = r.json()["id"]
        stored = rw.get(f"/v1/episodes/{old_id}").json()
        assert stored["content"] == OLD  # kept, with the relation
        assert stored["superseded_by"] == new_id
        assert stored["superseded_at"].startswith("2024-05-10T09:00:00")

        def contents(**body: Any) -> list[str]:
            return [h["content"] for h in _search(rw, "hotel budget per night", **only, **body)]

        # Before consolidation (Postgres and the session buffer answer), then after (the engine does).
        for stage in ("fresh", "consolidated"):
            assert OLD not in contents() and NEW in contents(), stage
            assert OLD in contents(include_superseded=True), stage
            assert contents(as_of="2024-05-05T00:00:00Z").count(OLD) == 1, stage
            assert NEW not in contents(as_of="2024-05-05T00:00:00Z"), stage
            text = _context(rw, "What is my hotel budget per night?", **only)
            assert "200 EUR" in text and "150 EUR" not in text, (stage, text)
            then = _context(rw, "What is my hotel budget per night?", as_of="2024-05-05T00:00:00Z", **only)
            assert "150 EUR" in then and "200 EUR" not in then, (stage, then)
            # With every version asked for, only the current one is packed beside its successor.
            everything = _context(rw, "What is my hotel budget per night?", include_superseded=True, **only)
            assert "200 EUR" in everything and "150 EUR" not in everything, (stage, everything)
            if stage == "fresh":
                _consolidate(rw, admin)
        hit = next(
            h for h in _search(rw, "hotel budget", include_superseded=True, **only) if h["content"] == OLD
        )
        assert hit["superseded_by"] == new_id and hit["superseded_at"].startswith("2024-05-10")
    with app_server.client("b_rw") as other:  # another tenant cannot name this tenant's records
        r = other.post("/v1/episodes", json={**ep, "content": NEW, "supersedes": [old_id]})
        assert r.status_code == 422, r.text


def test_memory_validity_supersedes_and_patch(app_server: AppServer) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    only = {"filters": {"agent_id": agent}}
    with app_server.client("a_rw") as rw:

        def create(**body: Any) -> dict[str, Any]:
            r = rw.post("/v1/memories", json={"agent_id": agent, **body})
            assert r.status_code == 201, r.text
            created: dict[str, Any] = r.json()
            return created

        expired = create(
            content="The team office is on Harbour Street.",
            valid_from="2018-01-01T00:00:00Z",
            valid_to="2020-01-01T00:00:00Z",
        )
        future = create(content="The team office moves to Mill Lane.", valid_from="2999-01-01T00:00:00Z")
        blue = create(id=f"{agent}-colour", content="The user's favourite colour is blue.")
        green = create(content="The user's favourite colour is green now.", supersedes=[f"{agent}-colour"])
        bad = rw.post(
            "/v1/memories",
            json={"agent_id": agent, "content": "x", "valid_from": "2024-02-01T00:00:00Z",
                  "valid_to": "2024-01-01T00:00:00Z"},
        )  # fmt: skip
        assert bad.status_code == 422, bad.text

        def ids(query: str, **body: Any) -> set[str]:
            return {h["source_ids"][0] for h in _search(rw, query, **only, **body)}

        office, colour = "team office street", "favourite colour"
        assert expired["id"] not in ids(office) and future["id"] not in ids(office)
        assert ids(office, as_of="2019-06-01T00:00:00Z") == {expired["id"]}
        assert {expired["id"], future["id"]} <= ids(office, include_superseded=True)
        hit = next(
            h
            for h in _search(rw, office, include_superseded=True, **only)
            if h["source_ids"][0] == future["id"]
        )
        assert hit["valid_from"].startswith("2999-01-01")
        assert ids(colour) & {blue["id"], green["id"]} == {green["id"]}
        assert rw.get(f"/v1/memories/{blue['id']}").json()["superseded_by"] == green["id"]
        # A replay of the superseded memory's write keeps it superseded.
        create(id=f"{agent}-colour", content="The user's favourite colour is blue.")
        assert blue["id"] not in ids(colour)

        r = rw.patch(f"/v1/memories/{green['id']}", json={"valid_to": "2021-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text
        assert green["id"] not in ids(colour)
        r = rw.patch(f"/v1/memories/{green['id']}", json={"valid_to": None})
        assert r.status_code == 200 and r.json()["valid_to"] is None, r.text
        assert green["id"] in ids(colour)
        versions = rw.get(f"/v1/memories/{green['id']}/history").json()
        assert [v["valid_to"] for v in versions][-2:] == ["2021-01-01T00:00:00Z", None]
