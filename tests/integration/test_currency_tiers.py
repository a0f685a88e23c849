"""Supersedes across consolidation and re-embedding (issue 26): the relation lives in Postgres, every
point derived from a replaced episode (its own, the window summary that cites it) is marked, and a
re-embedded collection carries the marks over."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core import supersedes
from core.consolidation.partition import consolidate_partition
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.models import Episode
from jobs.reembed import reembed
from tests.integration import consolidation_env as fixtures
from tests.integration.consolidation_env import Env, conversation, session_in
from tests.integration.test_reembed import NextVersion

pytestmark = pytest.mark.integration
template, embedder, env = fixtures.template, fixtures.embedder, fixtures.env


async def _visible(env: Env, tenant: str, *, current: bool, collection: str | None = None) -> set[str]:
    query = (await env.embedder.embed(["the train to Lisbon"])).vectors[0]
    filters = {"current_at": time.time()} if current else None
    hits = await env.vectors.search(query, tenant_id=tenant, k=50, filters=filters, collection=collection)
    return {f"{h.payload['record_type']}:{h.payload['record_id']}" for h in hits}


async def test_superseded_episode_and_its_summary_stay_hidden_through_reembed(
    env: Env, tenant: str, embedder: SentenceTransformerEmbedder
) -> None:
    eps = conversation(tenant, session_in(tenant, 0, "cur"), 8)
    await env.episodic.insert_episodes(eps)
    run = await env.runs.create(partitions=[0], trigger="test")
    await consolidate_partition(0, run_id=run.id, stores=env.stores, settings=env.settings.consolidation)
    every = await _visible(env, tenant, current=False)
    summaries = {k for k in every if k.startswith("summary:")}
    assert f"episode:{eps[0].id}" in every and summaries

    replaced: Episode = eps[0]  # "We booked the train to Lisbon ..."
    at = eps[-1].created_at + timedelta(minutes=1)
    link = supersedes.Link(replaced.id, "episode", eps[-1].id, at)
    await supersedes.apply(
        [link], tenant_id=tenant, episodic=env.episodic, vectors=env.vectors, working=env.working
    )
    current = await _visible(env, tenant, current=True)
    assert f"episode:{replaced.id}" not in current
    assert not current & summaries  # the window summary cites it: replaced with it
    assert current == every - {f"episode:{replaced.id}"} - summaries
    stored = await env.episodic.get_episode(tenant_id=tenant, episode_id=replaced.id)
    assert stored is not None and (stored.superseded_by, stored.superseded_at) == (eps[-1].id, at)

    result = await reembed(
        env.settings,
        partitions=[0, 1, 2, 3],
        parallelism=1,
        vectors=env.vectors,
        embedder=NextVersion(embedder),
    )
    fresh = result["collection"]
    assert await _visible(env, tenant, current=False, collection=fresh) == every
    assert await _visible(env, tenant, current=True, collection=fresh) == current
