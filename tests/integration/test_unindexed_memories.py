"""Memories stored without an index (``MemoryIn.index`` false), and searches that keep distinct items
(``diversify`` false), over real Postgres, Redis, the edge engine and the packaged model.

An unindexed memory is durable and readable but has no point and no lexical entry, so no search finds it,
whatever the mode; turning indexing off deletes the point it had, turning it on embeds it.
"""

from __future__ import annotations

import pytest

from core.retrieval.bm25_postgres import PostgresBm25Search
from core.retrieval.bm25_sparse import bm25_sparse
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.query import Filters, SearchQuery
from core.retrieval.tokens import load_token_counter
from core.schemas import MemoryIn, MemoryPatch
from core.service import HybridMemoryService
from jobs.integrity import IntegrityChecker
from tests.integration.consolidation_env import (  # noqa: F401  (fixtures)
    Env,
    embedder,
    env,
    template,
)

pytestmark = pytest.mark.integration

HIDDEN = "The spare key to the boathouse is taped under the third step."
SHOWN = "The lighthouse keeper in Norway writes letters to his daughter every winter."


def service(env: Env) -> HybridMemoryService:
    return HybridMemoryService(
        working=env.working, episodic=env.episodic, settings=env.settings, vectors=env.vectors,
        embedder=env.embedder,
    )  # fmt: skip


def retriever(env: Env) -> HybridRetriever:
    return HybridRetriever(
        working=env.working, lexical=PostgresBm25Search(env.pool, use_context=True), vectors=env.vectors,
        embedder=env.embedder, settings=env.settings.retrieval, token_counter=load_token_counter(),
        terms=bm25_sparse(env.settings.retrieval), fresh=PostgresBm25Search(env.pool),
    )  # fmt: skip


async def points_of(env: Env, tenant: str, record_id: str) -> int:
    version = await env.embedder.model_version()
    hits = await env.vectors.search(
        [1.0] + [0.0] * (version.dimension - 1), tenant_id=tenant, k=100,
        filters={"record_id": [record_id]},
    )  # fmt: skip
    return len(hits)


async def found(r: HybridRetriever, tenant: str, text: str, mode: str = "hybrid") -> list[str]:
    result = await r.search(
        SearchQuery(tenant_id=tenant, text=text, mode=mode, k=20, filters=Filters.of(agent_id="a1"))  # type: ignore[arg-type]
    )
    return [s.content for s in result.snippets]


async def test_an_unindexed_memory_is_stored_and_listed_but_never_found(env: Env, tenant: str) -> None:
    svc, r = service(env), retriever(env)
    hidden, shown = await svc.upsert_memories(
        tenant,
        [
            MemoryIn(id="hidden", agent_id="a1", content=HIDDEN, index=False),
            MemoryIn(id="shown", agent_id="a1", content=SHOWN),
        ],
    )
    assert (hidden.indexed, hidden.model_version) == (False, None)
    assert shown.indexed and shown.model_version is not None
    got = await svc.get_memory(tenant, hidden.id)
    assert (got.content, got.indexed) == (HIDDEN, False)
    assert {m.content for m in await svc.list_memories(tenant, agent_id="a1")} == {HIDDEN, SHOWN}
    assert await points_of(env, tenant, str(hidden.id)) == 0
    assert await points_of(env, tenant, str(shown.id)) == 1

    for mode in ("hybrid", "vector", "lexical"):
        assert HIDDEN not in await found(r, tenant, "spare key boathouse third step", mode), mode
        assert SHOWN in await found(r, tenant, "lighthouse keeper Norway letters", mode), mode
    # Postgres's own lexical searchers (the path taken while the engine is down) skip it too.
    for searcher in (PostgresBm25Search(env.pool, use_context=True), PostgresBm25Search(env.pool)):
        hits = await searcher.search_memories_text(tenant_id=tenant, query="boathouse key", k=10)
        assert [m.content for m, _ in hits] == []
    report = await IntegrityChecker(env.pool, env.vectors, dimension=384).check(tenants=[tenant])
    assert report.tenants[0].missing_memory_ids == [] and report.tenants[0].orphan_point_ids == []


async def test_indexing_turns_on_and_off(env: Env, tenant: str) -> None:
    svc, r = service(env), retriever(env)
    hidden = MemoryIn(id="m", agent_id="a1", content=HIDDEN, index=False)
    (record,) = await svc.upsert_memories(tenant, [hidden])
    assert HIDDEN not in await found(r, tenant, "boathouse key")

    (again,) = await svc.upsert_memories(tenant, [MemoryIn(id="m", agent_id="a1", content=HIDDEN)])
    assert again.id == record.id and again.indexed and again.created_at == record.created_at
    assert await points_of(env, tenant, str(record.id)) == 1
    assert HIDDEN in await found(r, tenant, "boathouse key")

    patched = await svc.patch_memory(tenant, record.id, MemoryPatch(index=False))
    assert (patched.indexed, patched.content) == (False, HIDDEN)
    assert await points_of(env, tenant, str(record.id)) == 0  # the old point is gone, not just hidden
    assert HIDDEN not in await found(r, tenant, "boathouse key")

    patched = await svc.patch_memory(tenant, record.id, MemoryPatch(index=True, content=SHOWN))
    assert patched.indexed and await points_of(env, tenant, str(record.id)) == 1
    assert SHOWN in await found(r, tenant, "lighthouse keeper")


async def test_a_search_without_diversity_keeps_equal_texts(env: Env, tenant: str) -> None:
    svc, r = service(env), retriever(env)
    same = [MemoryIn(id=f"k{i}", agent_id="a1", content=SHOWN, metadata={"n": i}) for i in range(3)]
    records = await svc.upsert_memories(tenant, [*same, MemoryIn(id="other", agent_id="a1", content=HIDDEN)])
    query = "lighthouse keeper letters"

    diverse = await r.search(SearchQuery(tenant_id=tenant, text=query, k=10))
    assert [s.content for s in diverse.snippets].count(SHOWN) == 1  # near-duplicates dropped by default

    plain = await r.search(SearchQuery(tenant_id=tenant, text=query, k=10, diversify=False))
    mine = [s for s in plain.snippets if s.content == SHOWN]
    assert sorted(s.metadata["n"] for s in mine) == [0, 1, 2]
    scores = [s.score for s in plain.snippets]
    assert scores == sorted(scores, reverse=True)  # plain relevance order
    by_id = {str(m.id): m for m in records}
    for s in plain.snippets:  # a memory hit carries its record's timestamps
        rec = by_id[s.source_ids[0]]
        assert (s.created_at, s.updated_at) == (rec.created_at, rec.updated_at)
