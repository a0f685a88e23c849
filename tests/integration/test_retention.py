"""Retention: archive old consolidated episodes (vectors removed or kept), drop idle session buffers
after copying them into Postgres; --dry-run changes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from core.consolidation.maintenance import archive_episodes, drop_idle_buffers
from core.consolidation.partition import consolidate_partition
from core.points import episode_chunks
from jobs.retention import run_retention
from tests.integration import consolidation_env as fixtures
from tests.integration.consolidation_env import (
    LONG,
    Env,
    conversation,
    episode,
    episode_point_records,
    session_in,
)

pytestmark = pytest.mark.integration
template, embedder, env = fixtures.template, fixtures.embedder, fixtures.env


async def _summary_points(env: Env, tenant: str) -> int:
    hits = await env.vectors.search(
        [1.0] + [0.0] * 383, tenant_id=tenant, k=100, filters={"record_type": "summary"}
    )
    return len(hits)


async def _chunk_points(env: Env, tenant: str) -> int:
    hits = await env.vectors.search(
        [1.0] + [0.0] * 383, tenant_id=tenant, k=100, filters={"record_type": "chunk"}
    )
    return len(hits)


@pytest.mark.parametrize("keep_vectors", [False, True])
async def test_archive_moves_old_consolidated_episodes(env: Env, tenant: str, keep_vectors: bool) -> None:
    now = datetime.now(UTC)
    old = conversation(tenant, session_in(tenant, 0, "old"), 5, start=now - timedelta(days=40))
    old.append(episode(tenant, old[0].session_id, "long", LONG, now - timedelta(days=39)))  # has chunks
    recent = conversation(tenant, session_in(tenant, 0, "new"), 3, start=now - timedelta(days=1))
    await env.episodic.insert_episodes([*old, *recent])
    run = await env.runs.create(partitions=[0], trigger="test")
    await consolidate_partition(0, run_id=run.id, stores=env.stores, settings=env.settings.consolidation)
    pending = episode(tenant, old[0].session_id, "pending", "Not consolidated yet.", now - timedelta(days=41))
    await env.episodic.insert_episodes([pending])
    # A replaced episode keeps its relation in the archive (issue 26).
    await env.episodic.supersede(tenant_id=tenant, links=[(old[0].id, old[1].id, old[1].created_at)])
    summaries_before = await _summary_points(env, tenant)
    assert await _chunk_points(env, tenant) == len(episode_chunks(LONG)) > 0
    version = await env.embedder.model_version()
    cutoff = now - timedelta(days=30)

    dry = await archive_episodes(env.pool, env.vectors, older_than=cutoff, version=version, dry_run=True)
    assert (dry.episodes, dry.tenants) == (6, 1)
    assert await env.pool.fetchval("SELECT count(*) FROM episodes_archive WHERE tenant_id = $1", tenant) == 0

    report = await archive_episodes(
        env.pool, env.vectors, older_than=cutoff, version=version, keep_vectors=keep_vectors
    )
    assert report.episodes == 6
    archived = await env.pool.fetch(
        "SELECT id, tsv IS NOT NULL AS has_tsv FROM episodes_archive WHERE tenant_id = $1", tenant
    )
    assert {r["id"] for r in archived} == {e.id for e in old} and all(r["has_tsv"] for r in archived)
    replaced = await env.pool.fetchrow(
        "SELECT superseded_by, superseded_at FROM episodes_archive WHERE id = $1", old[0].id
    )
    assert tuple(replaced) == (old[1].id, old[1].created_at)
    left = {r["id"] for r in await env.pool.fetch("SELECT id FROM episodes WHERE tenant_id = $1", tenant)}
    assert left == {e.id for e in recent} | {pending.id}
    points = await episode_point_records(env, tenant)
    expected = [*old, *recent] if keep_vectors else recent
    assert points == sorted(str(e.id) for e in expected)
    assert await _summary_points(env, tenant) == summaries_before > 0  # long-term form stays
    assert await _chunk_points(env, tenant) == (len(episode_chunks(LONG)) if keep_vectors else 0)
    again = await archive_episodes(env.pool, env.vectors, older_than=cutoff, version=version)
    assert again.episodes == 0


async def test_idle_buffers_are_copied_to_postgres_then_dropped(env: Env, tenant: str) -> None:
    idle_s, busy_s = session_in(tenant, 1, "idle"), session_in(tenant, 1, "busy")
    idle_eps, busy_eps = conversation(tenant, idle_s, 3), conversation(tenant, busy_s, 2)
    await env.working.append_session([*idle_eps, *busy_eps])  # neither is in Postgres yet
    sessions_key = f"{env.settings.redis.key_prefix}:t:{tenant}:sessions"
    await env.working._r.zadd(sessions_key, {idle_s: time.time() - 10 * 86400})
    prefix = env.settings.redis.key_prefix

    dry = await drop_idle_buffers(
        env.working._r, env.working, env.episodic, prefix=prefix, idle_s=86400, dry_run=True
    )
    assert dry.sessions == 1 and await env.working.recent_session(
        tenant_id=tenant, session_id=idle_s, limit=10
    )

    report = await drop_idle_buffers(env.working._r, env.working, env.episodic, prefix=prefix, idle_s=86400)
    assert (report.sessions, report.drained) == (1, 3)
    assert await env.working.recent_session(tenant_id=tenant, session_id=idle_s, limit=10) == []
    assert len(await env.working.recent_session(tenant_id=tenant, session_id=busy_s, limit=10)) == 2
    stored = await env.episodic.list_episodes(tenant_id=tenant, session_id=idle_s)
    assert [e.id for e in stored] == [e.id for e in idle_eps]
    assert busy_s and (tenant, busy_s) in await env.working.sessions_in_partition(1)
    assert (tenant, idle_s) not in await env.working.sessions_in_partition(1)


async def test_retention_job_dry_run_changes_nothing(env: Env, tenant: str) -> None:
    old = conversation(tenant, session_in(tenant, 2), 4, start=datetime.now(UTC) - timedelta(days=90))
    await env.episodic.insert_episodes(old)
    await env.pool.execute("UPDATE episodes SET consolidated_at = now() WHERE tenant_id = $1", tenant)
    result = await run_retention(env.settings, older_than_days=30, idle_days=30, dry_run=True)
    assert result["archive"]["episodes"] == 4 and result["dry_run"] is True
    assert await env.pool.fetchval("SELECT count(*) FROM episodes WHERE tenant_id = $1", tenant) == 4
