"""Hostile input over the Ingress's HTTP app (fakes + real edge index + real retriever): limits name the
field, NUL and oversized values are refused, and injection-shaped filter values are plain values."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from core.errors import InvalidInput
from core.stores.vector_filters import parse_filters, to_qdrant_filter
from tests.unit.test_tenant_isolation_property import World, h, world

HOSTILE = ["' OR 1=1 --", "*", "%", "_", "\\", "a'; DROP TABLE episodes; --", '{"$ne": null}', "é\u202e漢"]


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async with world() as ww:
        yield ww


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"agent_id": "a\x00b"}, 422, "agent_id"),
        ({"session_id": "s\x00"}, 422, "session_id"),
        ({"content": "hello\x00world"}, 422, "episode.content"),
        ({"agent_id": "a" * 257}, 422, "agent_id"),
        ({"kind": "x' OR 1=1"}, 422, "kind"),
        ({"content": "x" * 40_000}, 413, "episode.content"),
        ({"metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, 413, "episode.metadata"),
        ({"metadata": {"blob": "y" * 20_000}}, 413, "episode.metadata"),
        ({"tenant_id": "t1"}, 422, "tenant_id"),
        ({"created_at": "2024-01-01T00:00:00"}, 422, "created_at"),
    ],
)
async def test_episode_fields_are_checked_and_named(
    w: World, body: dict[str, object], status: int, field: str
) -> None:
    base = {"agent_id": "a0", "session_id": "s0", "content": "hello"}
    r = await w.client.post("/v1/episodes", json={**base, **body}, headers=h("t0"))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"], err


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/search", {"query": "q" * 4097}, "query"),
        ("/v1/search", {"query": "q", "filters": {"session_id": "s" * 257}}, "filters.session_id"),
        ("/v1/search", {"query": "q", "k": 10_000}, "k"),
        ("/v1/search", {"query": "q", "filters": {"tenant_id": "t1"}}, "filters.tenant_id"),
        ("/v1/context", {"query": "q", "token_budget": 10**9}, "token_budget"),
        ("/v1/context", {"query": ""}, "query"),
    ],
)
async def test_query_fields_are_bounded_and_named(
    w: World, path: str, body: dict[str, object], field: str
) -> None:
    r = await w.client.post(path, json=body, headers=h("t0"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_injection_shaped_filter_values_match_only_themselves(w: World, hostile: str) -> None:
    """A hostile session id stores and filters like any other string, inside the caller's tenant only."""
    r = await w.client.post(
        "/v1/episodes", json={"agent_id": hostile, "session_id": hostile, "content": "garden harbor"},
        headers=h("t1"),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    r = await w.client.post(
        "/v1/episodes",
        json={"agent_id": "a0", "session_id": "s0", "content": "garden harbor"},
        headers=h("t0"),
    )
    assert r.status_code == 201, r.text
    for mode in ("hybrid", "lexical", "vector"):
        for flt in ({"session_id": hostile}, {"agent_id": hostile}, {"metadata": {"k": hostile}}):
            r = await w.client.post(
                "/v1/search", json={"query": "garden harbor", "mode": mode, "filters": flt}, headers=h("t0")
            )
            assert r.status_code == 200, (mode, flt, r.text)
            assert r.json()["hits"] == [], (mode, flt)
    r = await w.client.get("/v1/episodes", params={"session_id": hostile}, headers=h("t0"))
    assert r.status_code == 200 and r.json()["items"] == []
    r = await w.client.get("/v1/episodes", params={"session_id": hostile}, headers=h("t1"))
    assert [e["session_id"] for e in r.json()["items"]] == [hostile]


async def test_hostile_metadata_filter_keys_are_refused_naming_the_key(w: World) -> None:
    """Once a vector collection exists, the semantic tier refuses metadata keys outside [A-Za-z0-9_-]."""
    r = await w.client.post("/v1/memories", json={"agent_id": "a0", "content": "q tea"}, headers=h("t0"))
    assert r.status_code == 201, r.text
    r = await w.client.post(
        "/v1/search", json={"query": "q", "filters": {"metadata": {"a' OR '1'='1": "x"}}}, headers=h("t0")
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "filters.metadata.a' OR '1'='1"


def test_vector_filters_never_drop_the_tenant_condition() -> None:
    """Filter values are data: whatever a caller sends, the tenant condition is always in ``must``."""
    for hostile in HOSTILE:
        flt = to_qdrant_filter(parse_filters("t0", {"session_id": hostile, "agent_id": [hostile, "x"]}))
        conditions = [c.model_dump() for c in flt.must or [] if isinstance(c, BaseModel)]
        assert {"key": "tenant_id"} in [{"key": c["key"]} for c in conditions]
        assert not flt.should and not flt.must_not
    with pytest.raises(InvalidInput):
        parse_filters("t0", {"tenant_id": "t1"})
    with pytest.raises(InvalidInput):
        parse_filters("", {})
