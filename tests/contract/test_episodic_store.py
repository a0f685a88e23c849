"""EpisodicStore contract: the same calls against the in-memory fake and the real Postgres adapter."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.errors import InvalidInput, StoreUnavailable
from core.ids import content_hash, partition_of
from core.models import Episode, MemoryRecord, Role, Transcript, TranscriptTurn
from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection
from tests.fakes import InMemoryEpisodicStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = ["a:b", "*", "x' OR '1'='1", "'; DROP TABLE episodes; --", 'q"uote\\', "ünï 🚀", "%_"]

impls = ["fake", pytest.param("postgres", marks=pytest.mark.integration)]


def episode(
    tenant: str,
    session: str = "s1",
    n: int = 0,
    *,
    content: str | None = None,
    agent: str = "agent-1",
    created_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    kind: str = "message",
) -> Episode:
    text = content if content is not None else f"turn number {n}"
    return Episode(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id=agent,
        session_id=session,
        partition=partition_of(tenant, session, 16),
        role=Role.USER,
        kind=kind,
        content=text,
        metadata=metadata if metadata is not None else {"n": n},
        created_at=created_at or T0 + timedelta(seconds=n),
        content_hash=content_hash(text),
    )


def memory(tenant: str, n: int, *, content: str | None = None, agent: str = "agent-1") -> MemoryRecord:
    return MemoryRecord(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id=agent,
        session_id="s1",
        kind="fact",
        content=content or f"fact number {n}",
        metadata={"n": n},
        source_ids=[f"ep-{n}", "ep-shared"],
        model_version="m@1",
        created_at=T0 + timedelta(seconds=n),
        updated_at=T0 + timedelta(seconds=n),
    )


@pytest.fixture(params=impls)
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "fake":
        return InMemoryEpisodicStore()
    return PostgresEpisodeStore(request.getfixturevalue("pg_pool"))


async def test_insert_is_idempotent_and_returns_only_new_ids(store: Any, tenant: str) -> None:
    a, b, c = (episode(tenant, n=n) for n in range(3))
    assert await store.insert_episodes([a, b]) == [a.id, b.id]
    assert await store.insert_episodes([a, b, c, c]) == [c.id]
    assert await store.insert_episodes([a]) == []
    assert await store.insert_episodes([]) == []
    assert await store.get_episode(tenant_id=tenant, episode_id=a.id) == a
    assert await store.get_episode(tenant_id=tenant + "-other", episode_id=a.id) is None
    assert len(await store.list_episodes(tenant_id=tenant)) == 3


async def test_recent_episodes_are_newest_oldest_first(store: Any, tenant: str) -> None:
    eps = [episode(tenant, n=n, agent="a1" if n % 2 else "a2") for n in range(6)]
    other_session = episode(tenant, "s2", 99)
    await store.insert_episodes([*reversed(eps), other_session])
    assert await store.recent_episodes(tenant_id=tenant, session_id="s1", limit=3) == eps[3:]
    assert await store.recent_episodes(tenant_id=tenant, session_id="s1", limit=2, agent_id="a2") == [
        eps[2],
        eps[4],
    ]
    assert await store.recent_episodes(tenant_id=tenant, session_id="s2", limit=10) == [other_session]


async def test_keyset_pagination_walks_every_row_once(store: Any, tenant: str) -> None:
    # Ties on created_at are broken by id, so a page boundary inside a tie loses nothing.
    eps = [episode(tenant, n=n, created_at=T0 + timedelta(seconds=n // 3)) for n in range(25)]
    await store.insert_episodes(eps)
    seen: list[Episode] = []
    after: tuple[datetime, uuid.UUID] | None = None
    while page := await store.list_episodes(tenant_id=tenant, after=after, limit=7):
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)
    assert seen == sorted(eps, key=lambda e: (e.created_at, e.id))
    assert await store.list_episodes(tenant_id=tenant, session_id="nope") == []
    assert len(await store.list_episodes(tenant_id=tenant, agent_id="agent-1", limit=5)) == 5


async def test_delete_episodes_is_tenant_scoped(store: Any, tenant: str) -> None:
    a, b = episode(tenant, n=1), episode(tenant, n=2)
    await store.insert_episodes([a, b])
    assert await store.delete_episodes(tenant_id=tenant + "-other", episode_ids=[a.id]) == 0
    assert await store.delete_episodes(tenant_id=tenant, episode_ids=[a.id, uuid.uuid4()]) == 1
    assert await store.get_episode(tenant_id=tenant, episode_id=a.id) is None
    assert await store.get_episode(tenant_id=tenant, episode_id=b.id) == b


async def test_transcript_is_stored_once_with_its_turns(store: Any, tenant: str) -> None:
    turns = [
        TranscriptTurn(speaker="buyer", content="We offer 90k.", created_at=T0),
        TranscriptTurn(speaker="seller", content="We want 110k.", metadata={"round": 1}),
    ]
    eps = [episode(tenant, "neg", n, content=t.content, agent=t.speaker) for n, t in enumerate(turns)]
    tr = Transcript(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id="buyer",
        session_id="neg",
        title="Price talks",
        participants=["buyer", "seller"],
        metadata={"deal": "x"},
        created_at=T0,
        turns=turns,
        episode_ids=[e.id for e in eps],
    )
    assert await store.insert_transcript(tr, eps) is True
    assert await store.insert_transcript(tr, eps) is False
    assert await store.get_transcript(tenant_id=tenant, transcript_id=tr.id) == tr
    assert await store.get_transcript(tenant_id=tenant + "-other", transcript_id=tr.id) is None
    assert await store.recent_episodes(tenant_id=tenant, session_id="neg", limit=10) == eps


async def test_memories_upsert_get_list_delete(store: Any, tenant: str) -> None:
    records = [memory(tenant, n) for n in range(5)]
    await store.upsert_memories(records)
    await store.upsert_memories(records)  # replay changes nothing
    assert await store.get_memory(tenant_id=tenant, memory_id=records[0].id) == records[0]
    updated = records[0].model_copy(update={"content": "revised fact", "updated_at": T0 + timedelta(days=1)})
    await store.upsert_memories([updated])
    assert await store.get_memory(tenant_id=tenant, memory_id=updated.id) == updated

    # The same id under another tenant never overwrites this tenant's row.
    await store.upsert_memories([updated.model_copy(update={"tenant_id": tenant + "-x", "content": "evil"})])
    assert await store.get_memory(tenant_id=tenant, memory_id=updated.id) == updated
    assert await store.get_memory(tenant_id=tenant + "-x", memory_id=updated.id) is None

    page1 = await store.list_memories(tenant_id=tenant, limit=3)
    page2 = await store.list_memories(tenant_id=tenant, after=(page1[-1].created_at, page1[-1].id), limit=3)
    assert [m.id for m in page1 + page2] == [m.id for m in records]
    assert await store.list_memories(tenant_id=tenant, agent_id="nobody") == []
    assert await store.delete_memories(tenant_id=tenant + "-x", memory_ids=[records[1].id]) == 0
    assert await store.delete_memories(tenant_id=tenant, memory_ids=[records[1].id, records[2].id]) == 2
    assert len(await store.list_memories(tenant_id=tenant)) == 3


async def test_every_memory_write_is_a_version_and_a_delete_is_the_last(store: Any, tenant: str) -> None:
    first = memory(tenant, 1, content="The user's budget is 150 EUR a night.")
    await store.upsert_memories([first], changed_by="key-a")
    second = first.model_copy(
        update={"content": "The budget is now 200 EUR.", "updated_at": T0 + timedelta(days=1)}
    )
    await store.upsert_memories([second], changed_by="key-b")
    # Another tenant's write under the same id is refused, and leaves no version here.
    await store.upsert_memories([second.model_copy(update={"tenant_id": tenant + "-x", "content": "evil"})])
    assert await store.delete_memories(tenant_id=tenant, memory_ids=[first.id], changed_by="key-c") == 1

    history = await store.memory_history(tenant_id=tenant, memory_id=first.id)
    assert [(v.version, v.op, v.content, v.changed_by) for v in history] == [
        (1, "create", "The user's budget is 150 EUR a night.", "key-a"),
        (2, "update", "The budget is now 200 EUR.", "key-b"),
        (3, "delete", "The budget is now 200 EUR.", "key-c"),
    ]
    assert history[0].changed_at == first.updated_at and history[1].changed_at == second.updated_at
    assert history[0].metadata == {"n": 1} and history[0].source_ids == first.source_ids
    assert await store.get_memory(tenant_id=tenant, memory_id=first.id) is None  # gone, its history kept
    assert await store.memory_history(tenant_id=tenant + "-x", memory_id=first.id) == []


async def test_hostile_strings_round_trip_and_stay_isolated(store: Any) -> None:
    base = uuid.uuid4().hex[:8]
    tenants = [base + h for h in HOSTILE]
    by_tenant: dict[str, list[Episode]] = {}
    for t in tenants:
        by_tenant[t] = [
            episode(t, s, n, agent=s, content=f"{s} says {t}", metadata={s: [t, {"k'": 'v"'}]})
            for n, s in enumerate(HOSTILE)
        ]
        await store.insert_episodes(by_tenant[t])
    for t in tenants:
        assert await store.list_episodes(tenant_id=t) == by_tenant[t]
        for s in HOSTILE:
            got = await store.recent_episodes(tenant_id=t, session_id=s, limit=10, agent_id=s)
            assert [(e.tenant_id, e.session_id, e.metadata) for e in got] == [(t, s, {s: [t, {"k'": 'v"'}]})]
    assert await store.list_episodes(tenant_id=base + "%") == []
    for q in HOSTILE:
        hits = await store.search_text(tenant_id=tenants[0], query=q, k=50)
        assert all(e.tenant_id == tenants[0] for e, _ in hits)


async def test_full_text_search_ranks_the_lexical_match_first(store: Any, tenant: str) -> None:
    budget = episode(tenant, n=1, content="The quarterly budget was approved by the finance committee")
    weather = episode(tenant, n=2, content="We chatted about the weather and the weekend")
    partial = episode(tenant, "s2", 3, content="The budget is pending", metadata={"topic": "ops"})
    foreign = episode(tenant + "-other", n=4, content="budget approved budget approved")
    await store.insert_episodes([budget, weather, partial, foreign])

    hits = await store.search_text(tenant_id=tenant, query="was the budget approved?", k=10)
    assert hits[0][0] == budget
    assert weather.id not in {e.id for e, _ in hits}
    assert all(e.tenant_id == tenant for e, _ in hits)
    assert all(score > 0 for _, score in hits)
    assert [e.id for e, _ in hits] == [budget.id, partial.id]

    async def found(**filters: Any) -> list[uuid.UUID]:
        return [
            e.id for e, _ in await store.search_text(tenant_id=tenant, query="budget", k=10, filters=filters)
        ]

    assert await found(session_id="s2") == [partial.id]
    assert await found(metadata={"topic": "ops"}) == [partial.id]
    assert await found(metadata={"topic": "nope"}) == []
    assert await found(created_after=T0 + timedelta(seconds=3)) == [partial.id]
    assert await found(created_before=T0 + timedelta(seconds=3)) == [budget.id]
    assert await found(agent_id="agent-1", kind="message") == [partial.id, budget.id]  # tie: newest first
    assert await found(kind="summary") == []
    top = await store.search_text(tenant_id=tenant, query="budget", k=1)
    assert [e.id for e, _ in top] == [partial.id]
    assert await store.search_text(tenant_id=tenant, query="the and of", k=5) == []  # stopwords only


async def test_memory_search_ranks_the_lexical_match_first(store: Any, tenant: str) -> None:
    await store.upsert_memories(
        [
            memory(tenant, 1, content="Alice prefers green tea in the morning"),
            memory(tenant, 2, content="The supplier contract renews in March"),
        ]
    )
    hits = await store.search_memories_text(tenant_id=tenant, query="what tea does alice drink", k=5)
    assert [m.content for m, _ in hits][:1] == ["Alice prefers green tea in the morning"]
    assert await store.search_memories_text(tenant_id=tenant + "-x", query="tea", k=5) == []


async def test_unavailable_store_raises_store_unavailable(store: Any) -> None:
    pool: asyncpg.Pool | None = None
    if isinstance(store, InMemoryEpisodicStore):
        store.available = False
        down: Any = store
    else:
        pool = await asyncpg.create_pool(
            "postgresql://postgres@127.0.0.1:1/postgres", min_size=0, max_size=1, timeout=1
        )
        down = PostgresEpisodeStore(pool, timeout_s=1)
    try:
        with pytest.raises(StoreUnavailable) as err:
            await down.ping()
        assert err.value.store == "postgres"
        with pytest.raises(StoreUnavailable):
            await down.insert_episodes([episode("t")])
        with pytest.raises(StoreUnavailable):
            await down.list_episodes(tenant_id="t")
        with pytest.raises(StoreUnavailable):
            await down.upsert_memories([memory("t", 1)])
    finally:
        if pool is not None:
            await pool.close()


# -- Postgres-only ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_postgres_transcript_is_atomic(pg_pool: asyncpg.Pool, tenant: str) -> None:
    store = PostgresEpisodeStore(pg_pool)
    good = episode(tenant, "neg", 1)
    bad = episode(tenant, "neg", 2, content="nul \x00 byte")  # Postgres text cannot hold NUL
    tr = Transcript(
        id=uuid.uuid4(), tenant_id=tenant, agent_id="a", session_id="neg", title="t", participants=[],
        created_at=T0,
    )  # fmt: skip
    with pytest.raises(InvalidInput):
        await store.insert_transcript(tr, [good, bad])
    assert await store.get_transcript(tenant_id=tenant, transcript_id=tr.id) is None
    assert await store.get_episode(tenant_id=tenant, episode_id=good.id) is None
    assert await store.insert_transcript(tr, [good]) is True


@pytest.mark.integration
async def test_postgres_bulk_insert_throughput(pg_pool: asyncpg.Pool, tenant: str) -> None:
    store = PostgresEpisodeStore(pg_pool)
    eps = [
        episode(tenant, f"s{n % 50}", n, content=f"bulk message {n} about topic {n % 7}") for n in range(5000)
    ]
    started = time.perf_counter()
    for i in range(0, len(eps), 1000):
        assert len(await store.insert_episodes(eps[i : i + 1000])) == 1000
    rate = len(eps) / (time.perf_counter() - started)
    assert rate > 1000, f"{rate:.0f} episodes/s"
    assert await store.insert_episodes(eps[:1000]) == []


@pytest.mark.integration
async def test_pool_without_json_codec_still_works(pg_database: str, tenant: str) -> None:
    pool = await asyncpg.create_pool(pg_database, min_size=0, max_size=1)
    try:
        plain = PostgresEpisodeStore(pool)
        ep = episode(tenant, n=1, metadata={"nested": {"a": [1, 2]}})
        await plain.insert_episodes([ep])
        assert await plain.get_episode(tenant_id=tenant, episode_id=ep.id) == ep
    finally:
        await pool.close()
    assert init_connection is not None


async def test_supersede_marks_the_earliest_and_stays_in_the_tenant(store: Any, tenant: str) -> None:
    old, new, newer = episode(tenant, n=0), episode(tenant, n=1), episode(tenant, n=2)
    fact = memory(tenant, 3)
    await store.insert_episodes([old, new, newer])
    await store.upsert_memories([fact])
    other = f"{tenant}-other"
    assert await store.find_records(tenant_id=tenant, ids=[old.id, fact.id, uuid.uuid4()]) == {
        old.id: "episode",
        fact.id: "memory",
    }
    assert await store.find_records(tenant_id=other, ids=[old.id, fact.id]) == {}

    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    applied = await store.supersede(tenant_id=tenant, links=[(old.id, new.id, t2), (fact.id, new.id, t2)])
    assert sorted(applied, key=str) == sorted([(old.id, new.id, t2), (fact.id, new.id, t2)], key=str)
    # An earlier supersession replaces a later one; a later one (or a replay) changes nothing.
    assert await store.supersede(tenant_id=tenant, links=[(old.id, newer.id, t1)]) == [(old.id, newer.id, t1)]
    assert await store.supersede(tenant_id=tenant, links=[(old.id, new.id, t2)]) == []
    # Another tenant cannot mark this tenant's rows.
    assert await store.supersede(tenant_id=other, links=[(new.id, old.id, t1)]) == []

    got = await store.get_episode(tenant_id=tenant, episode_id=old.id)
    assert (got.superseded_by, got.superseded_at) == (newer.id, t1)
    assert (await store.get_episode(tenant_id=tenant, episode_id=new.id)).superseded_by is None
    kept = await store.get_memory(tenant_id=tenant, memory_id=fact.id)
    assert (kept.superseded_by, kept.superseded_at, kept.content) == (new.id, t2, fact.content)
    # A rewrite of the memory's content does not clear what superseded it.
    await store.upsert_memories([kept.model_copy(update={"content": "fact rewritten"})])
    again = await store.get_memory(tenant_id=tenant, memory_id=fact.id)
    assert (again.superseded_by, again.content) == (new.id, "fact rewritten")


async def test_search_leaves_out_what_is_not_current_at_the_asked_time(store: Any, tenant: str) -> None:
    old = episode(tenant, n=0, content="my budget is 150 euros a night")
    new = episode(tenant, n=10, content="my budget is now 200 euros a night")
    await store.insert_episodes([old, new])
    switch = new.created_at
    await store.supersede(tenant_id=tenant, links=[(old.id, new.id, switch)])

    async def found(**filters: Any) -> list[str]:
        hits = await store.search_text(tenant_id=tenant, query="budget euros night", k=10, filters=filters)
        return sorted(ep.content for ep, _ in hits)

    now = time.time()
    assert await found(current_at=now) == [new.content]
    assert await found() == sorted([old.content, new.content])  # no currency asked: every row
    before = switch - timedelta(seconds=5)
    assert await found(current_at=before.timestamp(), as_of=before.timestamp()) == [old.content]
    assert await found(as_of=before.timestamp()) == [old.content]  # what existed then, superseded or not


async def test_memory_validity_round_trips_and_bounds_search(store: Any, tenant: str) -> None:
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=30)
    lease = memory(tenant, 0, content="the office lease runs at the harbour building").model_copy(
        update={"valid_from": start, "valid_to": end}
    )
    await store.upsert_memories([lease])
    got = await store.get_memory(tenant_id=tenant, memory_id=lease.id)
    assert (got.valid_from, got.valid_to) == (start, end)
    history = await store.memory_history(tenant_id=tenant, memory_id=lease.id)
    assert (history[-1].valid_from, history[-1].valid_to) == (start, end)

    async def found(at: datetime) -> int:
        filters = {"current_at": at.timestamp(), "as_of": at.timestamp()}
        hits = await store.search_memories_text(tenant_id=tenant, query="office lease", k=5, filters=filters)
        return len(hits)

    assert await found(start - timedelta(seconds=1)) == 0
    assert await found(start) == 1
    assert await found(end - timedelta(seconds=1)) == 1
    assert await found(end) == 0  # valid_to is exclusive


async def test_what_cites_a_superseded_record_is_superseded_with_it(store: Any, tenant: str) -> None:
    old, new = episode(tenant, n=0), episode(tenant, n=1)
    await store.insert_episodes([old, new])
    summary = memory(tenant, 2).model_copy(update={"source_ids": [str(old.id), "other"]})
    unrelated = memory(tenant, 3)
    await store.upsert_memories([summary, unrelated])
    at = T0 + timedelta(hours=1)
    assert await store.supersede(tenant_id=tenant, links=[(old.id, new.id, at)]) == [(old.id, new.id, at)]
    cited = await store.get_memory(tenant_id=tenant, memory_id=summary.id)
    assert (cited.superseded_by, cited.superseded_at) == (new.id, at)
    assert (await store.get_memory(tenant_id=tenant, memory_id=unrelated.id)).superseded_by is None
