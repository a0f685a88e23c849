"""Re-embedding into a new model version's collection while queries keep running against the alias."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.consolidation.partition import consolidate_partition
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import EmbedResult
from core.models import ModelVersion
from core.points import episode_chunks
from jobs.reembed import reembed
from tests.integration import consolidation_env as fixtures
from tests.integration.consolidation_env import LONG, Env, conversation, episode, session_in

pytestmark = pytest.mark.integration
template, embedder, env = fixtures.template, fixtures.embedder, fixtures.env


class NextVersion:
    """The same weights presented as another model version (what a model upgrade looks like to us)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.version = inner.version.model_copy(update={"revision": "nextrevision"})

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        r = await self._inner.embed(texts)
        return EmbedResult(vectors=r.vectors, truncated=r.truncated, version=self.version)

    async def model_version(self) -> ModelVersion:
        return self.version


async def test_reembed_switches_the_alias_at_the_end_and_queries_never_fail(
    env: Env, tenant: str, embedder: SentenceTransformerEmbedder
) -> None:
    eps = [ep for p in range(3) for ep in conversation(tenant, session_in(tenant, p, f"r{p}"), 8)]
    dup = episode(tenant, eps[0].session_id, "dup", eps[0].content, eps[3].created_at)
    long = episode(tenant, eps[0].session_id, "long", LONG, eps[5].created_at)  # embedded with chunks
    await env.episodic.insert_episodes([*eps, dup, long])
    run = await env.runs.create(partitions=[0, 1, 2], trigger="test")
    for p in range(3):
        await consolidate_partition(p, run_id=run.id, stores=env.stores, settings=env.settings.consolidation)
    old_key = (await embedder.model_version()).key
    old_count = await env.vectors.count(tenant_id=tenant)
    query = (await embedder.embed(["train to Lisbon"])).vectors[0]

    nxt = NextVersion(embedder)
    searches: list[int] = []
    done = asyncio.Event()

    async def keep_searching() -> None:
        while not done.is_set():
            hits = await env.vectors.search(query, tenant_id=tenant, k=5)
            searches.append(len(hits))
            await asyncio.sleep(0.01)

    searcher = asyncio.create_task(keep_searching())
    try:
        result = await reembed(
            env.settings, partitions=[0, 1, 2, 3], parallelism=2, vectors=env.vectors, embedder=nxt
        )
    finally:
        done.set()
        await searcher
    assert searches and min(searches) == 5, "every query during the run found results"
    assert (result["previous"], result["version"]) == (old_key, nxt.version.key)
    assert result["episodes"] == len(eps) + 1 and result["summaries"] == 3
    assert await env.vectors.live_version() == nxt.version.key
    new_collection = result["collection"]
    points = len(eps) + 1 + len(episode_chunks(LONG)) + 3
    assert await env.vectors.count(tenant_id=tenant, collection=new_collection) == old_count == points
    hits = await env.vectors.search(query, tenant_id=tenant, k=3)
    assert hits and all(h.payload["model_version"] == nxt.version.key for h in hits)
    assert "Lisbon" in hits[0].payload["content"]
