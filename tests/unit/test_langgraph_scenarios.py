"""The LangGraph store scenarios (tests/langgraph_scenarios.py) and their reference store, without the app.

- Every scenario runs, and two fresh reference stores answer it alike (the answers hold nothing
  run-dependent: no timestamps, no ranked order).
- A few reference answers are pinned where PostgresStore and InMemoryStore disagree.
- Each normalisation of the reference is still needed: plain InMemoryStore still shows the behaviour it
  corrects (if a LangGraph upgrade fixes one, drop the override and this case).

tests/serve/app/test_langgraph_fidelity.py runs the same scenarios against HybridMemStore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.store.base import BaseStore, GetOp, PutOp
from langgraph.store.memory import InMemoryStore

from tests.langgraph_scenarios import (
    SCENARIOS,
    Answers,
    index_config,
    make_reference,
    mismatches,
    postgres_filter_match,
    run_scenario,
)


def plain_inmemory() -> InMemoryStore:
    return InMemoryStore(index=index_config())  # type: ignore[arg-type]


def answer(answers: Answers, label: str) -> Any:
    return dict(answers)[label]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_agree_between_two_reference_stores(name: str) -> None:
    first = run_scenario(name, make_reference())
    second = run_scenario(name, make_reference())
    assert first, f"{name} answered nothing"
    assert not mismatches(first, second), "\n".join(mismatches(first, second))


def test_mismatches_name_the_differing_step() -> None:
    assert mismatches([("a", 1), ("b", [1])], [("a", 1), ("b", [1])]) == []
    assert mismatches([("a", 1), ("b", [1])], [("a", 1), ("b", [2])]) == [
        "- b:\n    expected [1]\n    got      [2]"
    ]
    assert mismatches([("a", 1)], [("b", 1)])[0].startswith("different steps")


# ---- reference answers where PostgresStore and InMemoryStore disagree --------------------------------


def test_reference_query_search_skips_unindexed_items_and_pages_tile() -> None:
    answers = run_scenario("index_false_and_missing_paths", make_reference())
    indexed = [(("notes",), key) for key in ["array", "field", "two_fields", "whole"]]
    assert answer(answers, "query, limit 10") == {
        "found": indexed,
        "page_sizes": [4],
        "repeats": 0,
        "scored": True,
    }
    assert answer(answers, "query, limit 3")["page_sizes"] == [3, 1]
    assert answer(answers, "query, limit 1")["page_sizes"] == [1, 1, 1, 1, 0]
    assert len(answer(answers, "search without a query")) == 7  # unindexed items are still listed
    assert answer(answers, "query with a filter")["found"] == []  # the only match has no vector


def test_reference_orders_unqueried_search_by_last_update() -> None:
    answers = run_scenario("put_get_update_delete", make_reference())
    assert [key for _, key, _ in answer(answers, "search the namespace")] == ["drink", "types", "food"]
    assert [key for _, key, _ in answer(answers, "search after put again")] == ["food", "drink", "types"]


def test_reference_reads_in_a_batch_do_not_see_its_puts() -> None:
    results = answer(
        run_scenario("batch_reads_see_the_store_before_the_batch", make_reference()), "batch results"
    )
    assert results[2] is None  # GetOp of a key put earlier in the batch
    assert results[7][2] == {"text": "an old note about the harbour"}  # GetOp after a PutOp rewrote it
    assert results[9] is not None  # GetOp after a PutOp deleted it
    assert results[11] == [("batch",)]  # ListNamespacesOp after a PutOp into batch/sub


def test_reference_filters_follow_postgres() -> None:
    answers = dict(run_scenario("filter_missing_fields_and_json_types", make_reference()))
    ns = ("types",)
    assert answers["v == 1 (not true, not '1')"] == [(ns, "v_one_float"), (ns, "v_one")]
    assert answers["v == true (not 1)"] == [(ns, "v_true")]
    assert answers["v == null (not a missing v)"] == [(ns, "v_null")]
    assert (ns, "no_v") not in answers["v $ne 1 (a missing v excluded)"]
    assert answers["other $ne 2 (only the item that has it)"] == [(ns, "no_v")]


def test_reference_scenarios_cover_every_comparison_operator() -> None:
    answers = dict(run_scenario("search_filters", make_reference()))
    ns, sub = ("catalog",), ("catalog", "archive")  # sub's a1 (rating 42) was put last
    assert answers["$gt"] == [(ns, "m1"), (ns, "f1"), (ns, "b2")]
    assert answers["$gte"] == [(sub, "a1"), (ns, "m1"), (ns, "f2"), (ns, "f1"), (ns, "b2"), (ns, "b1")]
    assert answers["$lt"] == [(ns, "m2"), (ns, "b3")]
    assert answers["$lte"] == [(sub, "a1"), (ns, "m2"), (ns, "f2"), (ns, "b3"), (ns, "b1")]
    assert answers["$ne (items without rating excluded)"] == [
        (ns, "m2"),
        (ns, "m1"),
        (ns, "f1"),
        (ns, "b3"),
        (ns, "b2"),
    ]


def test_filter_comparisons_refuse_what_postgres_compares_as_text() -> None:
    assert postgres_filter_match({"n": 42}, {"n": {"$gt": 30}})
    with pytest.raises(AssertionError, match="text and numeric order differ"):
        postgres_filter_match({"n": 9}, {"n": {"$lt": 10}})
    with pytest.raises(AssertionError, match="numbers only"):
        postgres_filter_match({"n": "9"}, {"n": {"$lt": 10}})


# ---- each normalisation of the reference is still needed ---------------------------------------------


def _unqueried_order(store: BaseStore) -> Any:
    store.put(("o",), "first", {"text": "first"})
    time.sleep(0.002)
    store.put(("o",), "second", {"text": "second"})
    return [it.key for it in store.search(("o",))]


def _unindexed_in_query(store: BaseStore) -> Any:
    store.put(("q",), "on", {"text": "violin"})
    store.put(("q",), "off", {"text": "violin"}, index=False)
    return sorted(it.key for it in store.search(("q",), query="violin"))


def _empty_namespace_listed(store: BaseStore) -> Any:
    store.put(("gone",), "k", {"text": "x"})
    store.delete(("gone",), "k")
    store.get(("ghost",), "k")
    return store.list_namespaces()


def _created_at_kept(store: BaseStore) -> Any:
    store.put(("c",), "k", {"text": "one"})
    first = store.get(("c",), "k")
    time.sleep(0.002)
    store.put(("c",), "k", {"text": "two"})
    second = store.get(("c",), "k")
    assert first is not None and second is not None
    return first.created_at == second.created_at


def _identical_texts_in_one_batch(store: BaseStore) -> Any:
    try:
        store.batch([PutOp(("t",), "a", {"text": "same"}), PutOp(("t",), "b", {"text": "same"})])
    except ValueError as exc:
        return f"ValueError: {exc}"
    return [it.key for it in store.search(("t",), query="same")]


def _ne_on_a_missing_field(store: BaseStore) -> Any:
    store.put(("f",), "has", {"v": 2})
    store.put(("f",), "lacks", {"w": 1})
    return sorted(it.key for it in store.search(("f",), filter={"v": {"$ne": 1}}))


def _gt_on_a_missing_field(store: BaseStore) -> Any:
    store.put(("g",), "has", {"v": 20})
    store.put(("g",), "lacks", {"w": 10})
    try:
        return [it.key for it in store.search(("g",), filter={"v": {"$gt": 10}})]
    except TypeError:
        return "TypeError"


def _typed_equality(store: BaseStore) -> Any:
    store.put(("e",), "true", {"v": True})
    store.put(("e",), "one", {"v": 1})
    return sorted(it.key for it in store.search(("e",), filter={"v": 1}))


def _reads_before_puts(store: BaseStore) -> Any:  # not a divergence: kept to show the stores agree
    results = store.batch([PutOp(("b",), "k", {"text": "x"}), GetOp(("b",), "k")])
    return results[1]


QUIRKS: dict[str, tuple[Callable[[BaseStore], Any], bool]] = {
    # name: (probe, whether plain InMemoryStore still answers it differently from the reference)
    "unqueried search is ordered by updated_at": (_unqueried_order, True),
    "a query search skips unindexed items": (_unindexed_in_query, True),
    "namespaces without items are not listed": (_empty_namespace_listed, True),
    "an update keeps created_at": (_created_at_kept, True),
    "identical texts may be put in one batch": (_identical_texts_in_one_batch, True),
    "$ne never matches a missing field": (_ne_on_a_missing_field, True),
    "$gt on a missing field does not match (no TypeError)": (_gt_on_a_missing_field, True),
    "equality is typed (true is not 1)": (_typed_equality, True),
    "reads in a batch do not see its puts": (_reads_before_puts, False),
}


@pytest.mark.parametrize("quirk", list(QUIRKS))
def test_reference_normalisations_are_still_needed(quirk: str) -> None:
    probe, differs = QUIRKS[quirk]
    plain, reference = probe(plain_inmemory()), probe(make_reference())
    assert (plain != reference) is differs, f"InMemoryStore: {plain!r}, reference: {reference!r}"
