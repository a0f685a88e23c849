"""PostgresBm25Search on a real Postgres (schema from the migrations, ctx_tsv included): BM25 ranking,
neighbour context, filters, tenant isolation, memory records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.ids import content_hash
from core.models import Episode, Role
from core.retrieval.bm25_postgres import PostgresBm25Search
from core.stores.postgres_episodic import PostgresEpisodeStore

pytestmark = pytest.mark.integration
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def _ep(tenant: str, text: str, i: int, *, session: str = "s1", agent: str = "a1") -> Episode:
    return Episode(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id=agent,
        session_id=session,
        partition=0,
        role=Role.USER,
        kind="message",
        content=text,
        created_at=T0 + timedelta(seconds=i),
        content_hash=content_hash(text),
    )


CONVERSATION = [
    "How was the pottery workshop you signed up for?",
    "It was amazing, I shaped a bowl and a little vase!",
    "That sounds lovely. I have been busy with the kids.",
    "The kids are growing so fast, we painted a sunrise together.",
    "The kids love the park, we go there every weekend.",
    "The park near us has a lake and the kids feed the ducks.",
]


async def test_bm25_prefers_rare_terms_and_context_finds_the_reply(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    store = PostgresEpisodeStore(pg_pool)
    episodes = [_ep(tenant, text, i) for i, text in enumerate(CONVERSATION)]
    await store.insert_episodes(episodes)
    await store.insert_episodes([_ep("other-" + tenant, "pottery workshop pottery workshop", 0)])
    plain = PostgresBm25Search(pg_pool)
    hits = await plain.search_text(
        tenant_id=tenant, query="What did the kids do at the pottery workshop?", k=3
    )
    assert hits[0][0].id == episodes[0].id  # the rare words win over the frequent "kids"
    assert all(e.tenant_id == tenant for e, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    # The answer turn ("a bowl and a little vase") shares no word with the question: only its
    # neighbour does. With the neighbour context it ranks next to the question turn.
    hits = await plain.search_text(tenant_id=tenant, query="What was made at the pottery workshop?", k=3)
    assert [e.id for e, _ in hits] == [episodes[0].id]
    updated = await plain.rebuild_session_context(tenant_id=tenant, session_id="s1", before=1, after=1)
    assert updated == len(CONVERSATION)
    ctx = PostgresBm25Search(pg_pool, use_context=True)
    hits = await ctx.search_text(tenant_id=tenant, query="What was made at the pottery workshop?", k=2)
    assert {e.id for e, _ in hits} == {episodes[0].id, episodes[1].id}
    assert hits[0][0].id == episodes[0].id  # own terms (weight A) outweigh a neighbour's (weight B)


async def test_filters_and_empty_queries(pg_pool: asyncpg.Pool, tenant: str) -> None:
    store = PostgresEpisodeStore(pg_pool)
    a = _ep(tenant, "the quarterly invoice for ACME", 0, session="s1")
    b = _ep(tenant, "another invoice for ACME", 1, session="s2", agent="a2")
    await store.insert_episodes([a, b])
    search = PostgresBm25Search(pg_pool)
    only_s2 = await search.search_text(
        tenant_id=tenant, query="ACME invoice", k=5, filters={"session_id": "s2"}
    )
    assert [e.id for e, _ in only_s2] == [b.id]
    by_agent = await search.search_text(
        tenant_id=tenant, query="ACME invoice", k=5, filters={"agent_id": "a1"}
    )
    assert [e.id for e, _ in by_agent] == [a.id]
    before = await search.search_text(
        tenant_id=tenant, query="ACME invoice", k=5, filters={"created_before": T0 + timedelta(seconds=1)}
    )
    assert [e.id for e, _ in before] == [a.id]
    for searcher in (search, store):  # one filter grammar for both lexical scorers
        any_kind = await searcher.search_text(
            tenant_id=tenant, query="ACME invoice", k=5, filters={"kind": ["note", "message"]}
        )
        assert {e.id for e, _ in any_kind} == {a.id, b.id}
        assert (
            await searcher.search_text(
                tenant_id=tenant, query="ACME invoice", k=5, filters={"kind": ["note"]}
            )
            == []
        )
    assert await search.search_text(tenant_id=tenant, query="the and of", k=5) == []
    assert await search.search_text(tenant_id=tenant, query="   ", k=5) == []


async def test_memory_records_are_searchable(pg_pool: asyncpg.Pool, tenant: str) -> None:
    from core.models import MemoryRecord

    store = PostgresEpisodeStore(pg_pool)
    rec = MemoryRecord(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id="a1",
        kind="fact",
        content="The staging database password rotates every Tuesday",
        source_ids=["e1"],
        created_at=T0,
        updated_at=T0,
    )
    await store.upsert_memories([rec])
    hits = await PostgresBm25Search(pg_pool).search_memories_text(
        tenant_id=tenant, query="password rotation", k=3
    )
    assert [(m.id, m.source_ids) for m, _ in hits] == [(rec.id, ["e1"])]


async def test_common_terms_are_pruned_from_candidate_lookup_without_changing_results(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    """A lexeme in every row (like "user" in every memory) is not used to find candidates once the
    tenant is large, yet the answer is the same as the exhaustive search: same ids, same scores.
    When the rarer lexemes cannot fill k results, it searches exhaustively without trying."""
    store = PostgresEpisodeStore(pg_pool)
    docs = [_ep(tenant, f"zorblat entry k{i % 100}zz number {i}", i) for i in range(300)]
    await store.insert_episodes(docs)
    prune_df = 0.5  # "zorblat" is in all 300 rows, "k7zz" in 3, "number" in all
    full = PostgresBm25Search(pg_pool, prune_df=0)
    pruned = PostgresBm25Search(pg_pool, prune_df=prune_df, prune_min_docs=100)

    for k in (3, 10):  # 3: the rare lexeme fills k; 10: it cannot, so the search is rerun unpruned
        want = await full.search_text(tenant_id=tenant, query="zorblat k7zz", k=k)
        got = await pruned.search_text(tenant_id=tenant, query="zorblat k7zz", k=k)
        assert [(e.id, round(s, 9)) for e, s in got] == [(e.id, round(s, 9)) for e, s in want]
        assert len(got) == k
    assert all("k7zz" in e.content for e, _ in got[:3])
    # k=10: "k7zz" is in 3 rows, so a pass finding candidates by it alone cannot fill k; not run.
    assert (pruned.pruned_searches, pruned.prune_fallbacks, pruned.prune_skips) == (1, 0, 1)

    # Small tenants are never pruned.
    small = PostgresBm25Search(pg_pool, prune_df=prune_df, prune_min_docs=10_000)
    await small.search_text(tenant_id=tenant, query="zorblat k7zz", k=3)
    assert (small.pruned_searches, small.prune_fallbacks) == (0, 0)


async def test_a_search_over_its_work_budget_scores_rare_rows_and_the_newest_rows_exactly(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    """When even the pruned search would score more rows than ``max_scan_rows`` (every row holds a
    common lexeme), it scores the rows of the rarer lexemes and the newest rows only: each score is still
    the exact BM25 score, the rare rows come first, and the rest are the best of the newest rows."""
    store = PostgresEpisodeStore(pg_pool)
    texts = [f"zorblat entry k{i % 100}zz number {i}" + " zorblat" * (i % 3) for i in range(300)]
    docs = [_ep(tenant, text, i) for i, text in enumerate(texts)]
    await store.insert_episodes(docs)
    full = PostgresBm25Search(pg_pool, prune_df=0)
    budget = PostgresBm25Search(
        pg_pool, prune_df=0.5, prune_min_docs=100, max_scan_rows=100, recent_window=40
    )

    exact = {e.id: s for e, s in await full.search_text(tenant_id=tenant, query="zorblat k7zz", k=300)}
    got = await budget.search_text(tenant_id=tenant, query="zorblat k7zz", k=10)
    assert budget.budget_fills == 1 and len(got) == 10
    assert all(s == pytest.approx(exact[e.id], abs=1e-9) for e, s in got)  # true BM25 scores
    assert {e.content.split()[2] for e, _ in got[:3]} == {"k7zz"}  # the rare rows first
    newest = {d.id for d in docs[-40:]}
    rest = [(e.id, s) for e, s in got[3:]]
    assert all(i in newest for i, _ in rest)
    best_newest = sorted((exact[i] for i in newest if i not in {e.id for e, _ in got[:3]}), reverse=True)
    assert [round(s, 9) for _, s in rest] == [round(s, 9) for s in best_newest[:7]]
    # Without a budget (0) the same search is exhaustive.
    unbounded = PostgresBm25Search(pg_pool, prune_df=0.5, prune_min_docs=100, max_scan_rows=0)
    want = await full.search_text(tenant_id=tenant, query="zorblat k7zz", k=10)
    again = await unbounded.search_text(tenant_id=tenant, query="zorblat k7zz", k=10)
    assert [e.id for e, _ in again] == [e.id for e, _ in want] and unbounded.budget_fills == 0


async def test_document_frequencies_are_shared_by_requests_at_different_times(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    """Every read asks for what is current *now* (``current_at``, a new time per request): the cached
    document frequencies must not be keyed by it, or no request would ever find them cached."""
    store = PostgresEpisodeStore(pg_pool)
    await store.insert_episodes(
        [_ep(tenant, f"zorblat entry k{i % 100}zz number {i}", i) for i in range(300)]
    )
    search = PostgresBm25Search(pg_pool, prune_df=0.5, prune_min_docs=100)
    for at in (1_000.0, 2_000.0, 3_000.0):
        await search.search_text(tenant_id=tenant, query="zorblat k7zz", k=3, filters={"current_at": at})
    scopes = {key.rsplit(":", 1)[0] for key in search._dfs if tenant in key}
    assert len(scopes) == 1, scopes
