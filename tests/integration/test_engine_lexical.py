"""Lexical search inside the semantic engine, end to end over real Postgres, Redis, the edge engine and
the packaged model: consolidation writes each turn's BM25 vector with its session neighbours folded in
(and rewrites the turns next to a later batch); the retriever gets the dense and the lexical list from
one engine call and asks Postgres only for the episodes not consolidated yet, or for everything while
the engine is down.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.consolidation.partition import consolidate_partition
from core.errors import StoreUnavailable
from core.models import Episode
from core.retrieval.bm25_postgres import PostgresBm25Search
from core.retrieval.bm25_sparse import bm25_sparse
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.query import SearchQuery
from core.retrieval.tokens import load_token_counter
from tests.integration.consolidation_env import (  # noqa: F401  (fixtures)
    T0,
    Env,
    conversation,
    embedder,
    env,
    episode,
    session_in,
    template,
)

pytestmark = pytest.mark.integration


class SpySearcher:
    """A Postgres BM25 searcher that records the filters of every call."""

    def __init__(self, inner: PostgresBm25Search) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    async def search_text(
        self, *, tenant_id: str, query: str, k: int, filters: dict[str, Any] | None = None
    ) -> list[tuple[Episode, float]]:
        self.calls.append(dict(filters or {}))
        return await self.inner.search_text(tenant_id=tenant_id, query=query, k=k, filters=filters)


class EngineDown:
    """The env's engine, except that searching it fails (the owner died mid-request, say)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def search_hybrid(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("qdrant", "test outage")


def retriever(env: Env, *, vectors: Any = None) -> tuple[HybridRetriever, SpySearcher, SpySearcher]:
    full = SpySearcher(PostgresBm25Search(env.pool, use_context=True))
    fresh = SpySearcher(PostgresBm25Search(env.pool, use_context=False))
    r = HybridRetriever(
        working=env.working, lexical=full, vectors=vectors or env.vectors, embedder=env.embedder,
        settings=env.settings.retrieval, token_counter=load_token_counter(),
        terms=bm25_sparse(env.settings.retrieval), fresh=fresh,
    )  # fmt: skip
    return r, full, fresh


async def consolidate(env: Env, partition: int) -> None:
    run = await env.runs.create(partitions=[partition], trigger="test")
    await consolidate_partition(
        partition, run_id=run.id, stores=env.stores, settings=env.settings.consolidation
    )


async def test_consolidated_turns_come_from_the_engine_and_new_ones_from_postgres(
    env: Env, tenant: str
) -> None:
    session = session_in(tenant, 1)
    await env.episodic.insert_episodes(conversation(tenant, session, 6))
    await consolidate(env, 1)
    assert await env.vectors.lexical_ready()
    late = episode(tenant, session, "late", "The ferry to Tangier leaves at dawn.", T0 + timedelta(hours=1))
    await env.episodic.insert_episodes([late])  # acknowledged, not consolidated
    r, full, fresh = retriever(env)

    found = await r.search(SearchQuery(tenant_id=tenant, text="the kitten Pixel", mode="lexical", k=3))
    assert "grey kitten called Pixel" in found.snippets[0].content
    assert found.snippets[0].scores["episodic"] > 0 and found.degraded == []
    found = await r.search(SearchQuery(tenant_id=tenant, text="ferry to Tangier", mode="lexical", k=3))
    assert found.snippets[0].content == late.content
    assert full.calls == []  # Postgres never scored the consolidated log
    assert fresh.calls and all(c.get("unconsolidated") for c in fresh.calls)

    both = await r.search(SearchQuery(tenant_id=tenant, text="cello practice", k=3))
    assert "cello" in both.snippets[0].content
    assert {"semantic", "episodic"} <= set(both.snippets[0].scores)  # one engine call, both lists


async def test_a_later_batch_is_folded_into_the_turns_before_it(env: Env, tenant: str) -> None:
    session = session_in(tenant, 2)
    first = conversation(tenant, session, 4)
    await env.episodic.insert_episodes(first)
    await consolidate(env, 2)
    later = episode(tenant, session, "z", "A zeppelin flew over the harbour.", T0 + timedelta(minutes=30))
    await env.episodic.insert_episodes([later])
    await consolidate(env, 2)
    r, _, _ = retriever(env)

    found = await r.search(SearchQuery(tenant_id=tenant, text="zeppelin", mode="lexical", k=5))
    contents = [s.content for s in found.snippets]
    # The new turn by its own word; the two turns before it through their rewritten neighbourhood.
    assert contents[0] == later.content
    assert set(contents[1:3]) == {first[3].content, first[2].content}
    assert found.snippets[1].scores["episodic"] < found.snippets[0].scores["episodic"]


async def test_an_engine_outage_leaves_lexical_search_to_postgres(env: Env, tenant: str) -> None:
    session = session_in(tenant, 3)
    await env.episodic.insert_episodes(conversation(tenant, session, 8))
    await consolidate(env, 3)
    r, full, _ = retriever(env, vectors=EngineDown(env.vectors))

    found = await r.search(SearchQuery(tenant_id=tenant, text="dentist appointment", k=3))
    assert found.degraded == ["semantic"]
    assert "dentist appointment" in found.snippets[0].content
    assert full.calls  # every episode scored in Postgres instead
