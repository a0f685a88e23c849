"""The per-process caches of the BM25 searcher stay bounded however many tenants and filters it sees."""

from __future__ import annotations

from core.retrieval import bm25_postgres as bm

TTL = bm._N_DOCS_TTL_S


def test_a_cache_below_the_bound_is_kept_as_it_is() -> None:
    cache = {f"k{i}": (0.0, i) for i in range(10)}
    assert bm._bounded(cache, now=10 * TTL) is cache


def test_a_full_cache_keeps_only_unexpired_entries() -> None:
    now = 1000.0
    cache = {f"old{i}": (now - 2 * TTL, i) for i in range(bm._CACHE_MAX - 10)}
    cache.update({f"new{i}": (now - 1.0, i) for i in range(10)})
    kept = bm._bounded(cache, now)
    assert sorted(kept) == sorted(f"new{i}" for i in range(10))


def test_a_full_cache_of_fresh_entries_is_emptied() -> None:
    now = 1000.0
    cache = {f"k{i}": (now, i) for i in range(bm._CACHE_MAX)}
    assert bm._bounded(cache, now) == {}
