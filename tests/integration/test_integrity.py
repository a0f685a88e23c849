"""jobs.integrity on the real Postgres fixture and a local vector store: drift both ways, report, repair."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from core import metrics as m
from core.ids import content_hash, partition_of
from core.models import Episode, MemoryRecord, ModelVersion, Role
from core.points import episode_point, memory_point, payload, point_id
from core.ports import VectorIndex
from core.settings import Settings, load_settings
from core.stores.postgres_episodic import PostgresEpisodeStore
from core.stores.vector_factory import open_vector_index
from jobs import integrity
from jobs.integrity import IntegrityChecker

pytestmark = pytest.mark.integration

DIM = 8
VERSION = ModelVersion(name="integrity-test", revision="0123456789ab", dimension=DIM)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _vec(i: int) -> list[float]:
    return [float((i + j) % 5 + 1) for j in range(DIM)]


def _episode(tenant: str, n: int, *, content: str | None = None, session: str = "s1") -> Episode:
    text = content or f"turn {n} of the integrity test"
    return Episode(
        id=uuid.uuid4(), tenant_id=tenant, agent_id="a1", session_id=session,
        partition=partition_of(tenant, session, 16), role=Role.USER, kind="message", content=text,
        created_at=T0 + timedelta(minutes=n), content_hash=content_hash(text),
    )  # fmt: skip


def _record(
    tenant: str, n: int, *, kind: str, sources: list[str] | None = None, version: str | None = None
) -> MemoryRecord:
    return MemoryRecord(
        id=uuid.uuid4(), tenant_id=tenant, agent_id="a1", session_id="s1", kind=kind, content=f"{kind} {n}",
        source_ids=sources or [], model_version=version or VERSION.key,
        created_at=T0 + timedelta(hours=n), updated_at=T0 + timedelta(hours=n),
    )  # fmt: skip


def _summary_point(record: MemoryRecord) -> object:
    from core.models import VectorPoint

    return VectorPoint(
        id=point_id(record.tenant_id, "summary", str(record.id), VERSION),
        vector=_vec(99),
        payload=payload(
            tenant_id=record.tenant_id, record_type="summary", record_id=str(record.id), agent_id="a1",
            session_id="s1", kind="summary", content=record.content, created_at=record.created_at,
            source_ids=[str(record.id), *record.source_ids], version=VERSION, metadata={},
        ),
    )  # fmt: skip


async def _mark_consolidated(pool: asyncpg.Pool, episodes: list[Episode]) -> None:
    await pool.execute(
        "UPDATE episodes SET consolidated_at = now() WHERE id = ANY($1::uuid[])", [e.id for e in episodes]
    )


async def _unconsolidated(pool: asyncpg.Pool, tenant: str) -> set[uuid.UUID]:
    rows = await pool.fetch(
        "SELECT id FROM episodes WHERE tenant_id = $1 AND consolidated_at IS NULL", tenant
    )
    return {r["id"] for r in rows}


@pytest.fixture(params=["local", "edge"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str) -> Settings:
    return load_settings(
        {"postgres": {"dsn": pg_database}, "qdrant": {"backend": request.param, "path": str(tmp_path / "q")}}
    )


@pytest.fixture
async def vectors(settings: Settings) -> AsyncIterator[VectorIndex]:
    async with open_vector_index(settings) as index:
        await index.ensure_collection(VERSION)
        yield index


class World:
    """The drift this test builds, by name."""

    def __init__(self, tenant: str) -> None:
        t = tenant
        self.ok = [_episode(t, i) for i in range(12)]  # consolidated, indexed (enough to page the listing)
        self.lost = _episode(t, 20)  # consolidated, point lost
        self.dup_a = _episode(t, 21, content="same words")  # consolidated, indexed through its first copy
        self.dup_b = _episode(t, 22, content="same words")
        self.lost_a = _episode(t, 23, content="lost words")  # a duplicated content whose point is lost
        self.lost_b = _episode(t, 24, content="lost words")
        self.pending = _episode(t, 25)  # not consolidated yet, no point: not drift
        self.interrupted = _episode(t, 26)  # not consolidated, point from an interrupted pass: not drift
        self.deleted = _episode(t, 27)  # point only: its row was deleted -> orphan
        self.memory = _record(t, 1, kind="fact")
        self.memory_lost = _record(t, 2, kind="fact")
        self.summary_lost = _record(t, 3, kind="summary", sources=[str(self.ok[0].id), str(self.ok[1].id)])
        self.other_version = _record(t, 4, kind="fact", version="other-model@ffffffffffff")
        self.deleted_memory = _record(t, 5, kind="fact")  # point only -> orphan

    @property
    def orphan_ids(self) -> set[uuid.UUID]:
        return {
            point_id(self.deleted.tenant_id, "episode", str(self.deleted.id), VERSION),
            point_id(self.deleted.tenant_id, "memory", str(self.deleted_memory.id), VERSION),
        }


async def _build(pool: asyncpg.Pool, vectors: VectorIndex, tenant: str) -> World:
    w = World(tenant)
    store = PostgresEpisodeStore(pool)
    consolidated = [*w.ok, w.lost, w.dup_a, w.dup_b, w.lost_a, w.lost_b]
    await store.insert_episodes([*consolidated, w.pending, w.interrupted])
    await _mark_consolidated(pool, consolidated)
    await store.upsert_memories([w.memory, w.memory_lost, w.summary_lost, w.other_version])
    indexed = [*w.ok, w.dup_a, w.interrupted, w.deleted]
    points = [episode_point(e, _vec(i), VERSION) for i, e in enumerate(indexed)]
    points += [memory_point(m, _vec(50 + i), VERSION) for i, m in enumerate([w.memory, w.deleted_memory])]
    await vectors.upsert(points)
    return w


async def test_report_finds_drift_both_ways_and_repair_fixes_it(
    pg_pool: asyncpg.Pool, vectors: VectorIndex, tenant: str
) -> None:
    w = await _build(pg_pool, vectors, tenant)
    checker = IntegrityChecker(pg_pool, vectors, dimension=DIM, page=4)  # small pages: the listing splits

    report = await checker.check([tenant])
    assert not report.ok
    (t,) = report.tenants
    assert t.counts == {
        "episodes_consolidated": 17, "episode_contents": 15, "summaries": 1, "memories": 3,
        "records_of_other_versions": 1, "points": 17, "points_episode": 15, "points_chunk": 0,
        "points_summary": 0, "points_memory": 2,
    }  # fmt: skip
    assert set(t.missing_episode_ids) == {w.lost.id, w.lost_a.id, w.lost_b.id}
    assert t.missing_summary_ids == [w.summary_lost.id]
    assert t.missing_memory_ids == [w.memory_lost.id]
    assert set(t.orphan_point_ids) == w.orphan_ids
    assert t.unlisted_points == 0
    totals = report.totals()
    assert (totals["missing_episodes"], totals["orphan_points"]) == (3, 2)
    as_json = json.loads(json.dumps(report.to_dict(max_ids=1)))
    assert as_json["tenants"][0]["missing_episode_total"] == 3
    assert len(as_json["tenants"][0]["missing_episode_ids"]) == 1

    done = await checker.repair(report)
    # lost, lost_a, lost_b, and the summary's two source episodes are re-queued; orphans are gone
    assert done == {
        "episodes_marked_unconsolidated": 5,
        "orphan_points_deleted": 2,
        "memories_needing_reput": 1,
    }
    requeued = {w.lost.id, w.lost_a.id, w.lost_b.id, w.ok[0].id, w.ok[1].id}
    assert await _unconsolidated(pg_pool, tenant) == requeued | {w.pending.id, w.interrupted.id}
    assert await vectors.count(tenant_id=tenant) == 15

    # What the next consolidation does for the re-queued episodes, and the memory re-put by its owner:
    again = [w.lost, w.lost_a, w.ok[0], w.ok[1]]
    await vectors.upsert([episode_point(e, _vec(70 + i), VERSION) for i, e in enumerate(again)])
    await vectors.upsert([_summary_point(w.summary_lost), memory_point(w.memory_lost, _vec(80), VERSION)])  # type: ignore[list-item]
    await _mark_consolidated(pg_pool, [w.lost, w.lost_a, w.lost_b, w.ok[0], w.ok[1]])

    after = await checker.check([tenant])
    assert after.ok, after.to_dict()
    assert after.tenants[0].counts["points"] == 19


async def test_cli_reports_then_repairs(
    pg_pool: asyncpg.Pool,
    settings: Settings,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_vector_index(settings) as index:  # the embedded stores belong to one opener at a time
        await index.ensure_collection(VERSION)
        w = await _build(pg_pool, index, tenant)
    monkeypatch.setenv("HYBRIDMEM_POSTGRES__DSN", settings.postgres.dsn or "")
    monkeypatch.setenv("HYBRIDMEM_QDRANT__BACKEND", settings.qdrant.backend)
    monkeypatch.setenv("HYBRIDMEM_QDRANT__PATH", str(settings.qdrant.path))

    assert await integrity.run(["--tenant", tenant, "--dimension", str(DIM)]) == 1
    dry = json.loads(capsys.readouterr().out)
    assert dry["ok"] is False and dry["repaired"] is None
    assert dry["totals"]["orphan_points"] == 2 and dry["totals"]["missing_episodes"] == 3
    assert await _unconsolidated(pg_pool, tenant) == {
        w.pending.id,
        w.interrupted.id,
    }  # dry run changed nothing

    assert await integrity.run(["--tenant", tenant, "--dimension", str(DIM), "--repair"]) == 1
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["repaired"]["orphan_points_deleted"] == 2
    assert w.lost.id in await _unconsolidated(pg_pool, tenant)


async def test_refresh_backlog_counts_unconsolidated_episodes_per_partition(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    backend = m.PrometheusBackend()
    m.use_backend(backend)
    try:
        eps = [_episode(tenant, i, session=f"s{i % 3}") for i in range(9)]
        parts = sorted({e.partition for e in eps})
        before = await m.refresh_backlog(pg_pool, parts)
        await PostgresEpisodeStore(pg_pool).insert_episodes(eps)
        await _mark_consolidated(pg_pool, eps[:2])
        assert await m.refresh_backlog(pg_pool, parts) - before == 7
        text = backend.render().decode()
        for p in parts:
            assert f'hybridmem_consolidation_backlog_episodes{{partition="{p}"}}' in text
    finally:
        m.use_backend(None)


async def test_a_supersession_missing_from_the_points_is_found_and_marked(
    pg_pool: asyncpg.Pool, vectors: VectorIndex, tenant: str
) -> None:
    store = PostgresEpisodeStore(pg_pool)
    old, new = _episode(tenant, 0, content="budget is 150"), _episode(tenant, 1, content="budget is 200")
    await store.insert_episodes([old, new])
    await _mark_consolidated(pg_pool, [old, new])
    await vectors.upsert([episode_point(e, _vec(i), VERSION) for i, e in enumerate([old, new])])
    # Recorded in Postgres, but the semantic tier never got the mark (a failure after the commit).
    await store.supersede(tenant_id=tenant, links=[(old.id, new.id, new.created_at)])
    checker = IntegrityChecker(pg_pool, vectors, dimension=DIM)

    report = await checker.check([tenant])
    assert not report.ok and report.tenants[0].unmarked_superseded_ids == [old.id]
    assert report.totals()["unmarked_superseded"] == 1
    assert await checker.repair(report) == {"memories_needing_reput": 0, "supersessions_marked": 1}
    assert (await checker.check([tenant])).ok
    current = await vectors.search(_vec(0), tenant_id=tenant, k=5, filters={"current_at": 2e9})
    assert [h.payload["record_id"] for h in current] == [str(new.id)]
