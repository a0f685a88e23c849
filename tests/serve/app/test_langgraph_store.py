"""HybridMemStore against the real Serve app, held to LangGraph's BaseStore semantics.

Each test uses its own ``agent_id`` (the store's key space), so tests sharing the app never meet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hybridmem_client import AsyncHybridMemClient, HybridMemClient
from hybridmem_client.langgraph_store import HybridMemStore
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def clients(app_server: AppServer) -> Iterator[tuple[HybridMemClient, AsyncHybridMemClient]]:
    sync = HybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60)
    yield sync, AsyncHybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60)
    sync.close()


@pytest.fixture
def store(clients: tuple[HybridMemClient, AsyncHybridMemClient]) -> HybridMemStore:
    return HybridMemStore(clients[0], agent_id=f"lg-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def astore(app_server: AppServer) -> AsyncIterator[HybridMemStore]:
    aclient = AsyncHybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60)
    yield HybridMemStore(aclient=aclient, agent_id=f"lg-{uuid.uuid4().hex[:8]}")
    await aclient.aclose()


def test_put_get_update_delete(store: HybridMemStore) -> None:
    ns = ("users", "alice", "prefs")
    assert store.get(ns, "food") is None
    store.put(ns, "food", {"likes": ["ramen", "tacos"], "spicy": True})
    item = store.get(ns, "food")
    assert item is not None
    assert (item.namespace, item.key, item.value) == (
        ns,
        "food",
        {"likes": ["ramen", "tacos"], "spicy": True},
    )
    assert item.created_at.tzinfo is not None and item.updated_at >= item.created_at

    store.put(ns, "food", {"likes": ["sushi"]})
    updated = store.get(ns, "food")
    assert updated is not None and updated.value == {"likes": ["sushi"]}
    assert updated.created_at == item.created_at and updated.updated_at > item.updated_at

    store.delete(ns, "food")
    assert store.get(ns, "food") is None
    store.delete(ns, "food")  # deleting what is gone is not an error


def test_namespaces_are_separate_key_spaces(store: HybridMemStore) -> None:
    store.put(("a", "b"), "k", {"v": 1})
    store.put(("a/b",), "k", {"v": 2})  # labels may hold separators; ids stay distinct
    store.put(("a",), "b:k", {"v": 3})
    assert store.get(("a", "b"), "k").value == {"v": 1}  # type: ignore[union-attr]
    assert store.get(("a/b",), "k").value == {"v": 2}  # type: ignore[union-attr]
    assert store.get(("a",), "b:k").value == {"v": 3}  # type: ignore[union-attr]
    assert store.get(("a",), "k") is None
    with pytest.raises(InvalidNamespaceError):
        store.put(("bad.label",), "k", {"v": 0})


def test_search_without_query_filters_by_prefix_and_value(store: HybridMemStore) -> None:
    for i in range(6):
        store.put(
            ("docs", "team-1" if i < 4 else "team-2"),
            f"d{i}",
            {"n": i, "status": "open" if i % 2 else "done"},
        )
    store.put(("other",), "x", {"n": 99, "status": "open"})

    team1 = store.search(("docs", "team-1"), limit=10)
    assert {it.key for it in team1} == {"d0", "d1", "d2", "d3"}
    assert all(it.namespace == ("docs", "team-1") and it.score is None for it in team1)
    assert {it.key for it in store.search(("docs",), limit=10)} == {f"d{i}" for i in range(6)}
    assert {it.key for it in store.search(("docs",), filter={"status": "open"})} == {"d1", "d3", "d5"}
    assert {it.key for it in store.search(("docs",), filter={"n": {"$gte": 4}})} == {"d4", "d5"}

    page1 = store.search(("docs",), limit=4)
    page2 = store.search(("docs",), limit=4, offset=4)
    assert len(page1) == 4 and len(page2) == 2
    assert {it.key for it in page1} | {it.key for it in page2} == {f"d{i}" for i in range(6)}
    assert page1[0].key == "d5"  # most recently updated first


def test_search_with_query_ranks_semantically_within_the_prefix(store: HybridMemStore) -> None:
    store.put(("memories", "alice"), "m1", {"text": "Alice adopted a golden retriever puppy named Max."})
    store.put(("memories", "alice"), "m2", {"text": "Alice is learning to play the violin."})
    store.put(("memories", "alice"), "m3", {"text": "Alice's favourite city is Lisbon."})
    store.put(("memories", "bob"), "m1", {"text": "Bob has a dog called Rex."})

    hits = store.search(("memories", "alice"), query="what pet does she have?", limit=2)
    assert hits and hits[0].key == "m1" and hits[0].namespace == ("memories", "alice")
    assert hits[0].score is not None and len(hits) <= 2
    assert all(h.namespace == ("memories", "alice") for h in hits)

    everyone = store.search(("memories",), query="dog", limit=5)
    assert {(h.namespace[-1], h.key) for h in everyone[:2]} == {("alice", "m1"), ("bob", "m1")}
    only_open = store.search(("memories",), query="dog", filter={"text": "Bob has a dog called Rex."})
    assert [(h.namespace, h.key) for h in only_open] == [(("memories", "bob"), "m1")]


def test_index_fields_choose_what_is_searched(store: HybridMemStore) -> None:
    ns = ("recipes",)
    store.put(ns, "r1", {"title": "Paella", "notes": "saffron rice with seafood"}, index=["notes"])
    store.put(ns, "r2", {"title": "Pancakes", "notes": "flour, milk, eggs"}, index=["notes"])
    hits = store.search(ns, query="seafood and rice", limit=1)
    assert [h.key for h in hits] == ["r1"]


def test_unindexed_items_are_stored_but_never_found_by_a_query(store: HybridMemStore) -> None:
    ns = ("kv",)
    store.put(ns, "secret", {"text": "The boathouse key is under the third step."}, index=False)
    store.put(ns, "no-path", {"title": "Boathouse key location"}, index=["text"])  # no text at "text"
    store.put(ns, "shown", {"text": "The boathouse roof leaks when it rains."})
    assert store.get(ns, "secret").value["text"].startswith("The boathouse key")  # type: ignore[union-attr]
    assert {it.key for it in store.search(ns, limit=10)} == {"secret", "no-path", "shown"}
    hits = store.search(ns, query="where is the boathouse key", limit=10)
    assert [h.key for h in hits] == ["shown"]  # the Postgres store's answer (InMemoryStore pads)
    store.put(ns, "shown", {"text": "The boathouse roof leaks when it rains."}, index=False)
    assert store.search(ns, query="boathouse roof", limit=10) == []  # re-put unindexed: its vector is gone


def test_distinct_keys_with_equal_values_are_all_found(store: HybridMemStore) -> None:
    ns = ("dupes",)
    for key in ("a", "b", "c"):
        store.put(ns, key, {"text": "Remember to water the orchids on Sunday."})
    hits = store.search(ns, query="water the orchids", limit=10)
    assert sorted(h.key for h in hits) == ["a", "b", "c"]
    items = {k: store.get(ns, k) for k in ("a", "b", "c")}
    for h in hits:  # each hit carries its own item's timestamps
        assert (h.created_at, h.updated_at) == (items[h.key].created_at, items[h.key].updated_at)  # type: ignore[union-attr]


def test_query_pages_tile_the_matches_past_the_ranked_head(store: HybridMemStore) -> None:
    """250 items: more than the 200 the service ranks, so the last pages come from the unranked rest."""
    ns = ("tiles",)
    store.batch(
        [
            PutOp(ns, f"k{i:03}", {"text": f"Trip note {i}: pack the tent and the stove.", "n": i})
            for i in range(250)
        ]
    )
    pages = [store.search(ns, query="camping gear tent", limit=40, offset=o) for o in range(0, 280, 40)]
    assert [len(p) for p in pages] == [40, 40, 40, 40, 40, 40, 10]
    keys = [h.key for p in pages for h in p]
    assert len(keys) == len(set(keys)) == 250
    assert all(h.score is not None for h in pages[0])
    # A selective filter: its few matches fill the page even when they rank low.
    few = store.search(ns, query="camping gear tent", filter={"n": {"$gte": 247}}, limit=10)
    assert sorted(h.key for h in few) == ["k247", "k248", "k249"]


def test_list_namespaces_prefix_suffix_depth(store: HybridMemStore) -> None:
    for ns in [("a", "b", "c"), ("a", "b", "d"), ("a", "e", "v1"), ("x", "y", "v1"), ("x",)]:
        store.put(ns, "k", {"ok": True})
    assert store.list_namespaces() == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "e", "v1"),
        ("x",),
        ("x", "y", "v1"),
    ]
    assert store.list_namespaces(prefix=("a", "b")) == [("a", "b", "c"), ("a", "b", "d")]
    assert store.list_namespaces(suffix=("v1",)) == [("a", "e", "v1"), ("x", "y", "v1")]
    assert store.list_namespaces(prefix=("a", "*"), suffix=("v1",)) == [("a", "e", "v1")]
    assert store.list_namespaces(max_depth=2) == [("a", "b"), ("a", "e"), ("x",), ("x", "y")]
    assert store.list_namespaces(prefix=("a",), max_depth=1) == [("a",)]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "d"), ("a", "e", "v1")]


def test_batch_reads_see_the_state_before_its_writes(store: HybridMemStore) -> None:
    """As in LangGraph's InMemoryStore and Postgres store: reads first, then the last write per key."""
    ns = ("batch",)
    store.put(ns, "one", {"n": 0})
    results = store.batch(
        [
            PutOp(ns, "one", {"n": 1}),
            PutOp(ns, "two", {"n": 2}),
            GetOp(ns, "one"),
            PutOp(ns, "one", None),
            GetOp(ns, "one"),
            SearchOp(ns, limit=10),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ns),)),
        ]
    )
    assert results[0] is None and results[1] is None and results[3] is None
    assert results[2].value == {"n": 0} and results[4].value == {"n": 0}  # type: ignore[union-attr]
    assert [(it.key, it.value) for it in results[5]] == [("one", {"n": 0})]  # type: ignore[union-attr]
    assert results[6] == [ns]
    assert store.get(ns, "one") is None  # the batch's last write to "one" deletes it
    assert store.get(ns, "two").value == {"n": 2}  # type: ignore[union-attr]


def test_a_put_on_an_existing_key_is_a_new_version(
    store: HybridMemStore, clients: tuple[HybridMemClient, AsyncHybridMemClient]
) -> None:
    from hybridmem_client.ids import deterministic_id
    from hybridmem_client.langgraph_store import item_client_id

    ns = ("users", "bob")
    store.put(ns, "city", {"text": "Bob lives in Lyon."})
    store.put(ns, "city", {"text": "Bob moved to Porto."})
    tenant = clients[0].whoami().tenant_id
    memory_id = deterministic_id(tenant, "memory", item_client_id(store._agent_id, ns, "city"))
    history = clients[0].memory_history(memory_id)
    assert [(v.op, json.loads(v.metadata["lg_value"])["text"]) for v in history] == [
        ("create", "Bob lives in Lyon."),
        ("update", "Bob moved to Porto."),
    ]


def test_agents_are_separate_key_spaces(clients: tuple[HybridMemClient, AsyncHybridMemClient]) -> None:
    tag = uuid.uuid4().hex[:8]
    a = HybridMemStore(clients[0], agent_id=f"lg-a-{tag}")
    b = HybridMemStore(clients[0], agent_id=f"lg-b-{tag}")
    a.put(("users", "alice"), "food", {"text": "Alice likes ramen"})
    assert b.get(("users", "alice"), "food") is None
    b.put(("users", "alice"), "food", {"text": "Bob's Alice likes tacos"})
    assert a.get(("users", "alice"), "food").value == {"text": "Alice likes ramen"}  # type: ignore[union-attr]
    assert [h.key for h in b.search(("users",), query="ramen")] == ["food"]
    assert b.search(("users",), query="ramen")[0].value == {"text": "Bob's Alice likes tacos"}


def test_tenants_never_share_items(store: HybridMemStore, app_server: AppServer) -> None:
    store.put(("shared-name",), "k", {"secret": "A"})
    with HybridMemClient(app_server.base_url, app_server.keys["b_rw"]) as b_client:
        other = HybridMemStore(b_client, agent_id=store._agent_id)
        assert other.get(("shared-name",), "k") is None
        assert other.search(("shared-name",)) == []
        assert other.search(("shared-name",), query="secret") == []


async def test_async_store_semantics(astore: HybridMemStore) -> None:
    ns = ("async", "user-1")
    await astore.aput(ns, "note", {"text": "Meeting with the landlord on Friday about the leaking roof."})
    item = await astore.aget(ns, "note")
    assert item is not None and item.value["text"].startswith("Meeting")
    hits = await astore.asearch(("async",), query="roof repair")
    assert [h.key for h in hits] == ["note"]
    assert await astore.alist_namespaces(prefix=("async",)) == [ns]
    await astore.adelete(ns, "note")
    assert await astore.aget(ns, "note") is None


async def test_async_methods_fall_back_to_the_blocking_client(store: HybridMemStore) -> None:
    await store.aput(("fallback",), "k", {"n": 1})
    assert (await store.aget(("fallback",), "k")).value == {"n": 1}  # type: ignore[union-attr]
    assert store.get(("fallback",), "k").value == {"n": 1}  # type: ignore[union-attr]
