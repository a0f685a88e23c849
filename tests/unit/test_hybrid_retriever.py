"""HybridRetriever over the in-memory store fakes and a small concept-space embedder."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.embedding.types import EmbedResult
from core.errors import StoreUnavailable
from core.ids import content_hash
from core.models import Episode, ModelVersion, Role, Tier, VectorHit, VectorPoint
from core.points import episode_chunk_points, episode_point
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.query import ContextQuery, Filters, SearchQuery
from core.retrieval.tokens import load_token_counter
from core.settings import RetrievalSettings
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore

VERSION = ModelVersion(name="concepts", revision="r1", dimension=4)
# A tiny "semantic space": synonyms share a dimension, so only the vector side links them.
CONCEPTS = {
    "car": 0,
    "automobile": 0,
    "vehicle": 0,
    "dog": 1,
    "puppy": 1,
    "paint": 2,
    "painting": 2,
    "sunrise": 3,
}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class ConceptEmbedder:
    def __init__(self, version: ModelVersion = VERSION) -> None:
        self.version = version

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        vectors = []
        for text in texts:
            v = [0.0] * VERSION.dimension
            for word in re.findall(r"\w+", text.lower()):
                if word in CONCEPTS:
                    v[CONCEPTS[word]] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return EmbedResult(vectors=vectors, truncated=[False] * len(texts), version=self.version)

    async def model_version(self) -> ModelVersion:
        return self.version


class ListVectorIndex:
    """Brute-force vector index with the port's tenant and equality filters."""

    def __init__(self) -> None:
        self.points: list[VectorPoint] = []
        self.available = True

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None:
        self.points.extend(points)

    async def search(
        self, vector: Sequence[float], *, tenant_id: str, k: int, filters: dict[str, Any] | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:  # fmt: skip
        if not self.available:
            raise StoreUnavailable("qdrant", "fake outage")
        hits = []
        for p in self.points:
            if p.payload["tenant_id"] != tenant_id:
                continue
            session = (filters or {}).get("session_id")
            if session is not None and p.payload.get("session_id") != session:
                continue
            score = sum(a * b for a, b in zip(vector, p.vector, strict=True))
            hits.append(VectorHit(id=str(p.id), score=score, payload=p.payload))
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    async def live_version(self) -> str | None:
        return VERSION.key


def _episode(text: str, minute: int, *, tenant: str = "t1", session: str = "s1") -> Episode:
    return Episode(
        id=uuid.uuid4(),
        tenant_id=tenant,
        agent_id="a1",
        session_id=session,
        partition=0,
        role=Role.USER,
        kind="message",
        content=text,
        created_at=T0 + timedelta(minutes=minute),
        content_hash=content_hash(text),
    )


CORPUS = [
    "I bought a new automobile yesterday",  # only the vector side links "car" to it
    "The invoice code is XJ42 for the order",  # only the lexical side finds "XJ42"
    "My puppy loves the park",
    "Melanie painted a sunrise last year",
    "We talked about the weather",
]


async def _index_points(index: ListVectorIndex, episodes: Sequence[Episode]) -> None:
    """What consolidation does for ``episodes``: one point each, embedded by the concept model."""
    vectors = (await ConceptEmbedder().embed([e.content for e in episodes])).vectors
    await index.upsert([episode_point(e, v, VERSION) for e, v in zip(episodes, vectors, strict=True)])


async def _setup(
    *, settings: RetrievalSettings | None = None
) -> tuple[HybridRetriever, InMemoryEpisodicStore, InMemoryWorkingStore, ListVectorIndex, list[Episode]]:
    episodes = [_episode(text, i) for i, text in enumerate(CORPUS)]
    episodes.append(_episode("A car from tenant two", 9, tenant="t2"))
    store, working, index = InMemoryEpisodicStore(), InMemoryWorkingStore(), ListVectorIndex()
    await store.insert_episodes(episodes)
    await _index_points(index, episodes)
    retriever = HybridRetriever(
        working=working, lexical=store, vectors=index, embedder=ConceptEmbedder(),  # type: ignore[arg-type]
        settings=settings or RetrievalSettings(), token_counter=load_token_counter(),
    )  # fmt: skip
    return retriever, store, working, index, episodes


async def test_hybrid_finds_lexical_only_and_vector_only_items() -> None:
    retriever, *_ = await _setup()
    found = await retriever.search(SearchQuery(tenant_id="t1", text="car invoice XJ42", k=3))
    contents = [s.content for s in found.snippets]
    assert CORPUS[0] in contents and CORPUS[1] in contents
    assert found.degraded == [] and found.top_score is not None and found.score_spread is not None
    assert all("tenant two" not in c for c in contents)
    vector_only = await retriever.search(
        SearchQuery(tenant_id="t1", text="car invoice XJ42", k=5, mode="vector")
    )
    assert {s.tier for s in vector_only.snippets} == {Tier.SEMANTIC}
    lexical_only = await retriever.search(
        SearchQuery(tenant_id="t1", text="car invoice XJ42", k=5, mode="lexical")
    )
    assert [s.content for s in lexical_only.snippets] == [CORPUS[1]]


async def test_same_episode_from_two_tiers_fuses_into_one_snippet() -> None:
    retriever, *_ = await _setup()
    found = await retriever.search(SearchQuery(tenant_id="t1", text="puppy park", k=5))
    top = found.snippets[0]
    assert top.content == CORPUS[2]
    assert top.tier == Tier.EPISODIC and {"semantic", "episodic", "fused"} <= set(top.scores)
    assert len([s for s in found.snippets if s.content == CORPUS[2]]) == 1


async def test_a_failing_tier_is_reported_not_raised() -> None:
    retriever, _, _, index, _ = await _setup()
    index.available = False
    found = await retriever.search(SearchQuery(tenant_id="t1", text="invoice XJ42", k=3))
    assert found.degraded == ["semantic"]
    assert found.snippets[0].content == CORPUS[1]


async def test_query_model_must_match_the_collection() -> None:
    retriever, *_ = await _setup()
    retriever._embedder = ConceptEmbedder(ModelVersion(name="other", revision="r2", dimension=4))
    found = await retriever.search(SearchQuery(tenant_id="t1", text="invoice XJ42", k=3))
    assert found.degraded == ["semantic"]


async def test_working_tier_offers_recent_session_turns() -> None:
    retriever, store, working, _, _ = await _setup(settings=RetrievalSettings(fusion="weighted"))
    fresh = _episode("Just now: the dentist moved to Friday", 60)
    await store.insert_episodes([fresh])  # durable at ack, and in the session buffer
    await working.append_session([fresh])
    found = await retriever.search(
        SearchQuery(tenant_id="t1", text="dentist", k=10, filters=Filters(session_id="s1"))
    )
    hit = next(s for s in found.snippets if s.content == fresh.content)
    assert {"working", "episodic"} <= set(hit.scores)
    store.available = False  # the buffer still answers when Postgres is down
    found = await retriever.search(
        SearchQuery(tenant_id="t1", text="dentist", k=10, filters=Filters(session_id="s1"))
    )
    assert found.degraded == ["episodic"]
    assert any(s.content == fresh.content and s.tier == Tier.WORKING for s in found.snippets)
    without_session = await retriever.search(SearchQuery(tenant_id="t1", text="dentist", k=3))
    assert all(s.content != fresh.content for s in without_session.snippets)


async def test_the_session_buffer_does_not_boost_turns_the_episodic_tier_ranks() -> None:
    """Buffered turns are durable too: while Postgres answers, being in the buffer changes no rank."""
    retriever, store, working, index, episodes = await _setup(settings=RetrievalSettings(fusion="weighted"))
    older = _episode("The dentist moved the checkup for my puppy to Friday", 30)
    fresh = _episode("Dentist said Friday works", 60)
    await store.insert_episodes([older, fresh])
    await _index_points(index, [older, fresh])
    session, query = Filters(session_id="s1"), "dentist Friday checkup puppy"
    before = await retriever.search(SearchQuery(tenant_id="t1", text=query, k=5, filters=session))
    await working.append_session([*episodes[:5], older, fresh])
    after = await retriever.search(SearchQuery(tenant_id="t1", text=query, k=5, filters=session))
    assert [(s.content, s.score) for s in after.snippets] == [(s.content, s.score) for s in before.snippets]
    assert after.snippets[0].content == older.content
    assert "working" in after.snippets[0].scores  # seen by the working tier, just not counted twice
    store.available = False  # with Postgres down, the buffer's overlap scores rank what it holds
    down = await retriever.search(SearchQuery(tenant_id="t1", text=query, k=5, filters=session))
    assert down.degraded == ["episodic"] and down.snippets[0].score > 0


async def test_context_respects_budget_and_quotas() -> None:
    retriever, *_ = await _setup()
    ctx = await retriever.context(
        ContextQuery(tenant_id="t1", text="car puppy sunrise invoice", token_budget=20)
    )
    assert 0 < ctx.tokens_used <= 20
    assert all(s.token_count is not None for s in ctx.snippets)
    assert ctx.context.count("\n") == len(ctx.snippets) - 1
    quota = await retriever.context(
        ContextQuery(
            tenant_id="t1", text="car puppy sunrise invoice", token_budget=500, tier_quotas=(("semantic", 0),)
        )
    )
    assert quota.snippets and all(s.tier != Tier.SEMANTIC for s in quota.snippets)


async def test_unknown_tier_is_invalid_input() -> None:
    retriever, *_ = await _setup()
    with pytest.raises(Exception, match="tiers"):
        await retriever.search(SearchQuery(tenant_id="t1", text="x", tiers=("graph",)))


async def test_lexical_tier_also_finds_memory_records() -> None:
    from core.models import MemoryRecord

    retriever, store, *_ = await _setup()
    record = MemoryRecord(
        id=uuid.uuid4(),
        tenant_id="t1",
        agent_id="a1",
        kind="fact",
        content="Caroline's passport number ends in 7731",
        created_at=T0,
        updated_at=T0,
    )
    await store.upsert_memories([record])
    found = await retriever.search(SearchQuery(tenant_id="t1", text="passport number", k=3, mode="lexical"))
    assert found.snippets[0].source_ids[0] == str(record.id)
    assert found.snippets[0].metadata["record_type"] == "memory"
    off = retriever._settings.model_copy(update={"lexical_memories": False})
    retriever._settings = off
    found = await retriever.search(SearchQuery(tenant_id="t1", text="passport number", k=3, mode="lexical"))
    assert all(s.source_ids[0] != str(record.id) for s in found.snippets)


def test_working_tier_filter_semantics() -> None:
    from datetime import UTC, datetime

    from core.models import Episode, Role

    ep = Episode(
        id=__import__("uuid").uuid4(),
        tenant_id="t",
        agent_id="a",
        session_id="s",
        partition=0,
        role=Role.USER,
        kind="note",
        content="x",
        metadata={"lang": "en"},
        created_at=datetime(2024, 3, 1, 10, tzinfo=UTC),
        content_hash="h",
    )
    at = datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert Filters.of(kind=["note", "fact"], metadata={"lang": "en"}).matches(ep)
    assert not Filters.of(kind="fact").matches(ep)
    assert not Filters.of(agent_id="b").matches(ep)
    assert not Filters.of(session_id="other").matches(ep)
    assert Filters.of(created_after=at).matches(ep)  # inclusive
    assert Filters.of(created_after=at.replace(tzinfo=None)).matches(ep)  # naive is UTC
    assert not Filters.of(created_before=at).matches(ep)  # exclusive
    assert not Filters.of(metadata={"lang": "de"}).matches(ep)
    assert Filters.of(created_before=at.replace(hour=11), metadata={"lang": "en"}).matches(ep)


async def test_chunk_points_stand_for_their_episode_once_at_its_best_score() -> None:
    retriever, store, _, index, _ = await _setup()
    long = _episode("A long report. It is about weather. Then a painting. Then the park. The end.", 20)
    await store.insert_episodes([long])
    await index.upsert([episode_point(long, [0.0, 0.0, 0.0, 0.0], VERSION)])  # its own vector: nothing
    # two chunks: one about painting (close to the query), one about a dog
    await index.upsert(episode_chunk_points(long, [[0.0, 0.0, 1.0, 0.0], [0.0, 0.8, 0.6, 0.0]], VERSION))

    found = await retriever.search(SearchQuery(tenant_id="t1", text="painting", k=10, mode="vector"))
    hits = [s for s in found.snippets if s.content == long.content]
    assert len(hits) == 1  # three points, one record
    assert hits[0].scores["semantic"] == pytest.approx(1.0)  # the best chunk's score
    assert hits[0].metadata["record_type"] == "episode"
    assert hits[0].source_ids == [str(long.id)]


async def test_chunk_points_crowding_the_first_page_trigger_one_deeper_fetch() -> None:
    retriever, store, _, index, _ = await _setup(settings=RetrievalSettings(candidate_k=2))
    index.points.clear()  # only the long episodes below
    longs = [
        _episode(f"Report {i}. A painting. Another painting. More painting. End.", 30 + i) for i in range(3)
    ]
    await store.insert_episodes(longs)
    for i, ep in enumerate(longs):  # each episode: two chunk points, better for earlier episodes
        await index.upsert(episode_chunk_points(ep, [[0.0, 0.0, 1.0 - i / 10, 0.1]] * 2, VERSION))
    found = await retriever.search(SearchQuery(tenant_id="t1", text="painting", k=2, mode="vector"))
    assert [s.content for s in found.snippets] == [longs[0].content, longs[1].content]


async def test_context_fetches_as_many_candidates_as_asked() -> None:
    retriever, store, _, index, _ = await _setup()
    asked: list[int] = []
    lexical, vector = store.search_text, index.search

    async def counting_lexical(**kw: Any) -> Any:
        asked.append(kw["k"])
        return await lexical(**kw)

    async def counting_vector(vec: Sequence[float], **kw: Any) -> Any:
        asked.append(kw["k"])
        return await vector(vec, **kw)

    store.search_text = counting_lexical  # type: ignore[method-assign]
    index.search = counting_vector  # type: ignore[method-assign]
    found = await retriever.context(
        ContextQuery(tenant_id="t1", text="invoice XJ42", token_budget=64, candidates=3)
    )
    assert "XJ42" in found.context
    assert asked and set(asked) == {3}  # each tier offers the 3 candidates packing considers
    asked.clear()
    await retriever.context(ContextQuery(tenant_id="t1", text="invoice XJ42", token_budget=64))
    assert set(asked) == {RetrievalSettings().context_candidates}


async def test_the_first_collection_is_searched_as_soon_as_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    retriever, _, _, index, _ = await _setup()
    live: list[str | None] = [None]

    async def live_version() -> str | None:
        return live[0]

    monkeypatch.setattr(index, "live_version", live_version)
    clock = [1000.0]
    monkeypatch.setattr("core.retrieval.hybrid.time.monotonic", lambda: clock[0])
    query = SearchQuery(tenant_id="t1", text="car", k=3, tiers=("semantic",))
    assert (await retriever.search(query)).snippets == []  # nothing consolidated yet
    live[0] = VERSION.key  # the first consolidation made the collection
    clock[0] += 2.0  # seconds, not the half minute a known collection's version is kept
    assert CORPUS[0] in [s.content for s in (await retriever.search(query)).snippets]
