"""PostgresBm25Search on a real Postgres: BM25 ranking, neighbour context, filters, tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.ids import content_hash
from core.models import Episode, Role
from core.retrieval.bm25_postgres import PostgresBm25Search
from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection

pytestmark = pytest.mark.integration
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.fixture(scope="module")
async def bm25_pool(postgres_admin_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Own database (the context column is added here, never to the shared test database)."""
    from core import migrate

    name = f"hm_bm25_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, _ = postgres_admin_dsn.rpartition("/")
    dsn = f"{base}/{name}"
    try:
        await migrate.upgrade(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init_connection, timeout=10)
        await pool.execute("ALTER TABLE episodes ADD COLUMN ctx_tsv tsvector")
        await pool.execute("CREATE INDEX ix_episodes_ctx_tsv ON episodes USING gin (ctx_tsv)")
        yield pool
        await pool.close()
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


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
    bm25_pool: asyncpg.Pool, tenant: str
) -> None:
    store = PostgresEpisodeStore(bm25_pool)
    episodes = [_ep(tenant, text, i) for i, text in enumerate(CONVERSATION)]
    await store.insert_episodes(episodes)
    await store.insert_episodes([_ep("other-" + tenant, "pottery workshop pottery workshop", 0)])
    plain = PostgresBm25Search(bm25_pool)
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
    ctx = PostgresBm25Search(bm25_pool, use_context=True)
    hits = await ctx.search_text(tenant_id=tenant, query="What was made at the pottery workshop?", k=2)
    assert {e.id for e, _ in hits} == {episodes[0].id, episodes[1].id}
    assert hits[0][0].id == episodes[0].id  # own terms (weight A) outweigh a neighbour's (weight B)


async def test_filters_and_empty_queries(bm25_pool: asyncpg.Pool, tenant: str) -> None:
    store = PostgresEpisodeStore(bm25_pool)
    a = _ep(tenant, "the quarterly invoice for ACME", 0, session="s1")
    b = _ep(tenant, "another invoice for ACME", 1, session="s2", agent="a2")
    await store.insert_episodes([a, b])
    search = PostgresBm25Search(bm25_pool)
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
    assert await search.search_text(tenant_id=tenant, query="the and of", k=5) == []
    assert await search.search_text(tenant_id=tenant, query="   ", k=5) == []
