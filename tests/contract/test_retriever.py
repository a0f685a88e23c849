"""Contract of core.ports.Retriever: the same retrieval checks in process and through Serve.

``in_process``: :class:`core.retrieval.hybrid.HybridRetriever` over the real Redis and Postgres, an
embedded engine and the model, written to through :class:`core.service.HybridMemoryService`.
``serve``: the whole app on a local Ray + Serve, written to over HTTP, read through
:class:`deployments.retriever.HandleRetriever` on the Retriever deployment's handle: the typed query
crosses the handle as it is and the typed result comes back.

Both run with the same non-default ``retrieval`` settings, so a query that leaves ``k`` or the token
budget unset shows the serving side's settings take effect.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import InvalidInput
from core.ports import Retriever
from core.retrieval.query import ContextQuery, Filters, SearchQuery
from core.retrieval.results import ContextResult, SearchResult
from core.settings import ApiKeySpec, load_settings
from tests.conftest import new_key_prefix

pytestmark = pytest.mark.integration

DEFAULT_K = 3
DEFAULT_BUDGET = 96
TENANTS = ("a", "b")

Write = Callable[[str, str, list[dict[str, Any]]], Awaitable[None]]


@dataclass
class Backend:
    name: str
    retriever: Retriever
    write: Write  # (tenant, "memories" | "episodes", items)
    tenants: dict[str, str]
    model_version: str


def _settings(redis_url: str, dsn: str, data_dir: Path, tenants: dict[str, str]) -> dict[str, Any]:
    return {
        "env": "test",
        "data_dir": str(data_dir),
        "redis": {"url": redis_url, "key_prefix": new_key_prefix("retriever")},
        "postgres": {"dsn": dsn, "pool_max_size": 4},
        "qdrant": {"backend": "edge", "path": str(data_dir / "qdrant")},
        "consolidation": {"enabled": False},
        "retrieval": {"default_k": DEFAULT_K, "default_token_budget": DEFAULT_BUDGET},
        "auth": {
            "api_keys": [
                ApiKeySpec(
                    key_sha256=ApiKeySpec.hash_key(f"key-{t}"),
                    tenant_id=t,
                    scopes=["memory:read", "memory:write"],
                ).model_dump()
                for t in tenants.values()
            ]
        },
    }


@contextlib.asynccontextmanager
async def _in_process(settings: dict[str, Any], tenants: dict[str, str]) -> AsyncIterator[Backend]:
    from core.embedding.loader import load_embedder
    from core.resources import open_resources
    from core.retrieval.build import build_hybrid_retriever
    from core.schemas import EpisodeIn, MemoryIn
    from core.service import HybridMemoryService
    from core.stores.vector_factory import open_vector_index

    s = load_settings(settings)
    async with open_resources(s) as res, open_vector_index(s) as index:
        embedder = await load_embedder(s.embedding)
        service = HybridMemoryService(
            working=res.working, episodic=res.episodic, vectors=index, embedder=embedder, settings=s
        )

        async def write(tenant: str, what: str, items: list[dict[str, Any]]) -> None:
            if what == "memories":
                await service.upsert_memories(tenant, [MemoryIn(**i) for i in items])
            else:
                await service.store_episodes(tenant, [EpisodeIn(**i) for i in items])

        version = (await embedder.embed(["probe"])).version.key
        yield Backend(
            "in_process",
            build_hybrid_retriever(s, resources=res, vectors=index, embedder=embedder),
            write,
            tenants,
            version,
        )


@contextlib.contextmanager
def _served(settings: dict[str, Any], tenants: dict[str, str]) -> Iterator[Backend]:
    from ray import serve

    from deployments.local import local_app
    from deployments.retriever import HandleRetriever

    with local_app(settings) as base_url:
        handle = serve.get_deployment_handle("Retriever", app_name="hybridmem")

        async def write(tenant: str, what: str, items: list[dict[str, Any]]) -> None:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer key-{tenant}"}, timeout=60
            ) as client:
                r = await client.post(f"/v1/{what}/batch", json={what: items})
                assert r.status_code == 201, r.text

        probe = httpx.post(
            f"{base_url}/v1/embeddings/batch",
            json={"texts": ["probe"]},
            headers={"Authorization": f"Bearer key-{tenants['a']}"},
            timeout=60,
        )
        probe.raise_for_status()
        version = probe.json()["model_version"]["key"]
        yield Backend("serve", HandleRetriever(handle), write, tenants, version)


@pytest.fixture(scope="module", params=["in_process", pytest.param("serve", marks=[pytest.mark.serve])])
async def backend(
    request: pytest.FixtureRequest, redis_url: str, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    tenants = {t: f"tenant-{t}-{uuid.uuid4().hex[:8]}" for t in TENANTS}
    settings = _settings(redis_url, pg_database, tmp_path_factory.mktemp(f"hm-{request.param}"), tenants)
    if request.param == "in_process":
        async with _in_process(settings, tenants) as b:
            yield b
    else:
        with _served(settings, tenants) as b:
            yield b


def _word() -> str:
    """A token no other test writes (the module's tests share two tenants)."""
    return "zq" + uuid.uuid4().hex[:10]


def _contents(found: SearchResult | ContextResult) -> list[str]:
    return [s.content for s in found.snippets]


async def test_a_memory_is_found_by_every_mode_with_the_model_version(backend: Backend) -> None:
    a, word = backend.tenants["a"], _word()
    text = f"My locker code at the climbing gym is {word}"
    await backend.write(a, "memories", [{"agent_id": "ag", "content": text}])
    for mode in ("hybrid", "lexical", "vector"):
        found = await backend.retriever.search(
            SearchQuery(tenant_id=a, text=f"locker code {word}", mode=mode)
        )
        assert isinstance(found, SearchResult)
        assert text in _contents(found)[:DEFAULT_K], mode
        assert found.degraded == []
        hit = next(s for s in found.snippets if s.content == text)
        assert hit.agent_id == "ag" and hit.source_ids
    hybrid = await backend.retriever.search(SearchQuery(tenant_id=a, text=f"locker code {word}"))
    assert hybrid.model_version == backend.model_version
    lexical = await backend.retriever.search(
        SearchQuery(tenant_id=a, text=f"locker code {word}", mode="lexical")
    )
    assert lexical.model_version is None  # the semantic collection was not searched
    assert "semantic" in next(s for s in hybrid.snippets if s.content == text).scores


async def test_k_and_token_budget_default_to_the_serving_settings(backend: Backend) -> None:
    a, word = backend.tenants["a"], _word()
    facts = [
        "bought a red kayak in the spring sale and paddled it twice",
        "moved the piano lessons from Monday evenings to Saturday mornings",
        "keeps the spare house key under the third flower pot on the porch",
        "switched the electricity contract to a wind power supplier last year",
        "learned to bake sourdough bread during the long winter holidays",
        "drives an old green van that needs new brakes before the summer trip",
    ]
    await backend.write(a, "memories", [{"agent_id": "ag", "content": f"{word}: {f}"} for f in facts])
    found = await backend.retriever.search(SearchQuery(tenant_id=a, text=word, mode="lexical"))
    assert len(found.snippets) == DEFAULT_K
    more = await backend.retriever.search(SearchQuery(tenant_id=a, text=word, mode="lexical", k=5))
    assert len(more.snippets) == 5
    packed = await backend.retriever.context(ContextQuery(tenant_id=a, text=word))
    assert isinstance(packed, ContextResult)
    assert packed.token_budget == DEFAULT_BUDGET and 0 < packed.tokens_used <= DEFAULT_BUDGET
    assert word in packed.context and packed.context.count(word) < 6  # the budget cut it short
    bigger = await backend.retriever.context(ContextQuery(tenant_id=a, text=word, token_budget=1000))
    assert bigger.token_budget == 1000 and bigger.context.count(word) == 6


async def test_filters_hold_on_every_tier(backend: Backend) -> None:
    a, word = backend.tenants["a"], _word()
    await backend.write(
        a,
        "memories",
        [
            {
                "agent_id": "x",
                "kind": "fact",
                "content": f"{word} fact from x: the boat is blue",
                "metadata": {"lang": "en"},
            },
            {
                "agent_id": "y",
                "kind": "fact",
                "content": f"{word} fact from y: trains run late",
                "metadata": {"lang": "de"},
            },
            {"agent_id": "x", "kind": "preference", "content": f"{word} preference from x: window seats"},
        ],
    )
    x_fact, y_fact, x_pref = (
        f"{word} fact from x: the boat is blue",
        f"{word} fact from y: trains run late",
        f"{word} preference from x: window seats",
    )
    cases = {
        Filters.of(agent_id="x"): {x_fact, x_pref},
        Filters.of(kind="preference"): {x_pref},
        Filters.of(kind=["fact", "preference"], agent_id="y"): {y_fact},
        Filters.of(metadata={"lang": "en"}): {x_fact},
        Filters.of(created_after=datetime.now(UTC) + timedelta(hours=1)): set(),
        Filters.of(created_before=datetime.now(UTC) + timedelta(hours=1), agent_id="y"): {y_fact},
    }
    for filters, expected in cases.items():
        for mode in ("hybrid", "lexical", "vector"):
            found = await backend.retriever.search(
                SearchQuery(tenant_id=a, text=word, k=10, mode=mode, filters=filters)
            )
            got = {c for c in _contents(found) if word in c}
            assert got == expected, (filters, mode)


async def test_a_tenant_never_sees_another_tenants_memories(backend: Backend) -> None:
    a, b, word = backend.tenants["a"], backend.tenants["b"], _word()
    await backend.write(a, "memories", [{"agent_id": "ag", "content": f"The vault phrase is {word}"}])
    for mode in ("hybrid", "lexical", "vector"):
        found = await backend.retriever.search(
            SearchQuery(tenant_id=b, text=f"vault phrase {word}", mode=mode)
        )
        assert all(word not in c for c in _contents(found)), mode
    packed = await backend.retriever.context(ContextQuery(tenant_id=b, text=f"vault phrase {word}"))
    assert word not in packed.context


async def test_a_fresh_episode_is_found_and_the_session_buffer_answers(backend: Backend) -> None:
    a, word, session = backend.tenants["a"], _word(), f"s-{uuid.uuid4().hex[:6]}"
    turns = [
        {"agent_id": "ag", "session_id": session, "content": f"I booked the {word} ferry for Tuesday"},
        {"agent_id": "ag", "session_id": session, "role": "assistant", "content": "Noted, Tuesday it is."},
    ]
    await backend.write(a, "episodes", turns)
    # Not consolidated: the lexical side finds it in Postgres as soon as the write is acknowledged.
    found = await backend.retriever.search(SearchQuery(tenant_id=a, text=f"{word} ferry", mode="lexical"))
    assert turns[0]["content"] in _contents(found)
    in_session = await backend.retriever.search(
        SearchQuery(tenant_id=a, text="when is the ferry", filters=Filters(session_id=session), k=5)
    )
    assert turns[0]["content"] in _contents(in_session)
    assert all(s.session_id == session for s in in_session.snippets)
    packed = await backend.retriever.context(
        ContextQuery(tenant_id=a, text=f"{word} ferry", filters=Filters(session_id=session), token_budget=200)
    )
    assert turns[0]["content"] in packed.context
    only_working = await backend.retriever.context(
        ContextQuery(
            tenant_id=a,
            text=f"{word} ferry",
            filters=Filters(session_id=session),
            tier_quotas=(("episodic", 0), ("semantic", 0)),
        )
    )
    assert only_working.snippets and all(s.tier.value == "working" for s in only_working.snippets)


async def test_bad_queries_raise_invalid_input_naming_the_field(backend: Backend) -> None:
    a = backend.tenants["a"]
    with pytest.raises(InvalidInput) as bad_tier:
        await backend.retriever.search(SearchQuery(tenant_id=a, text="anything", tiers=("graph",)))
    assert bad_tier.value.field == "tiers"
    with pytest.raises(InvalidInput) as bad_quota:
        await backend.retriever.context(
            ContextQuery(tenant_id=a, text="anything", tier_quotas=(("graph", 5),))
        )
    assert bad_quota.value.field == "tier_quotas"
    with pytest.raises(InvalidInput) as bad_mode:
        SearchQuery(tenant_id=a, text="anything", mode="fuzzy")  # type: ignore[arg-type]
    assert bad_mode.value.field == "mode"
