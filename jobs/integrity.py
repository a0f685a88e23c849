"""Data-integrity check: do Postgres records and the semantic tier's points agree? Reports, and repairs.

Per tenant it compares consolidated episodes and ``memory_records`` (Postgres) with the live collection's
points (the alias), counting per record_type, and lists the drift:

- missing points: a consolidated episode content (tenant, session, content hash; duplicates share one
  point) or a summary/memory record of the live model version without a point.
  Repair: mark the episodes (for a summary, its source episodes) unconsolidated, with every duplicate
  of the same content, so the next consolidation re-embeds and re-indexes them under the same
  deterministic ids. A missing ``memory`` point (written through the API) is only reported: re-put it.
- orphan points: a point whose record no longer exists in Postgres (deleted, archived), or whose memory
  record is no longer indexed (``index`` false). Repair: delete.
- unmarked supersessions: a record Postgres holds as superseded (``superseded_by``) whose points still
  read as current (a mark that failed after the commit, or a point written from a stale read).
  Repair: mark them (``VectorIndex.mark_superseded``, idempotent).

It talks to the semantic tier only through ``core.ports.VectorIndex`` (so it works against a Qdrant
server, local mode, the edge store, or the engine-owning Retriever's handle): lookups filter on
``record_id``; listing pages through ``created_ts`` windows. Dry run by default::

    python -m jobs.integrity [--tenant T ...] [--repair] [--dimension 384] [--publish]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from core.metrics import METRICS
from core.models import VectorHit
from core.ports import VectorIndex

logger = logging.getLogger(__name__)

LOOKUP_BATCH = 512  # record ids per filtered lookup (the filter language allows 1024)
PAGE = 256  # points per listing window; a full window is split in two
_TS_LO, _TS_HI = -(2.0**40), 2.0**40  # created_ts bounds wide enough for any epoch seconds
REPORT_IDS = 50


@dataclass
class TenantDrift:
    """Counts and drift of one tenant (ids are complete here; :meth:`IntegrityReport.to_dict` caps them)."""

    tenant_id: str
    counts: dict[str, int] = field(default_factory=dict)
    missing_episode_ids: list[uuid.UUID] = field(default_factory=list)
    missing_summary_ids: list[uuid.UUID] = field(default_factory=list)
    missing_memory_ids: list[uuid.UUID] = field(default_factory=list)
    orphan_point_ids: list[uuid.UUID] = field(default_factory=list)
    unmarked_superseded_ids: list[uuid.UUID] = field(default_factory=list)
    unlisted_points: int = 0  # points the listing could not reach (count() minus listed)

    @property
    def drift(self) -> int:
        return (
            len(self.missing_episode_ids)
            + len(self.missing_summary_ids)
            + len(self.missing_memory_ids)
            + len(self.orphan_point_ids)
            + len(self.unmarked_superseded_ids)
        )


@dataclass
class IntegrityReport:
    live_version: str | None
    tenants: list[TenantDrift] = field(default_factory=list)
    points_of_unknown_tenants: int = 0
    repaired: dict[str, int] | None = None

    def totals(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for t in self.tenants:
            out.update(t.counts)
            out["missing_episodes"] += len(t.missing_episode_ids)
            out["missing_summaries"] += len(t.missing_summary_ids)
            out["missing_memories"] += len(t.missing_memory_ids)
            out["orphan_points"] += len(t.orphan_point_ids)
            out["unmarked_superseded"] += len(t.unmarked_superseded_ids)
            out["unlisted_points"] += t.unlisted_points
        out["points_of_unknown_tenants"] = self.points_of_unknown_tenants
        return dict(out)

    @property
    def ok(self) -> bool:
        return (
            not any(t.drift or t.unlisted_points for t in self.tenants) and not self.points_of_unknown_tenants
        )

    def to_dict(self, max_ids: int = REPORT_IDS) -> dict[str, Any]:
        tenants = []
        for t in self.tenants:
            d = asdict(t)
            for key, value in list(d.items()):
                if key.endswith("_ids"):
                    d[key] = [str(v) for v in value[:max_ids]]
                    d[key.removesuffix("_ids") + "_total"] = len(value)
            tenants.append(d)
        return {
            "ok": self.ok,
            "live_version": self.live_version,
            "totals": self.totals(),
            "tenants": tenants,
            "repaired": self.repaired,
        }


# Records Postgres holds as superseded, with what replaced them and from when.
_SUPERSEDED = """
SELECT id, superseded_by, superseded_at FROM episodes
WHERE tenant_id = $1 AND superseded_at IS NOT NULL AND consolidated_at IS NOT NULL
UNION ALL
SELECT id, superseded_by, superseded_at FROM memory_records
WHERE tenant_id = $1 AND superseded_at IS NOT NULL AND indexed
"""

_MARK_UNCONSOLIDATED = """
UPDATE episodes e SET consolidated_at = NULL, consolidation_run_id = NULL
FROM (SELECT DISTINCT tenant_id, session_id, content_hash FROM episodes
      WHERE tenant_id = $1 AND id = ANY($2::uuid[])) g
WHERE e.tenant_id = g.tenant_id AND e.session_id = g.session_id AND e.content_hash = g.content_hash
  AND e.consolidated_at IS NOT NULL
"""


class IntegrityChecker:
    """Compares Postgres with a VectorIndex. Borrows the pool and the index."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        vectors: VectorIndex,
        *,
        dimension: int,
        timeout_s: float = 30.0,
        page: int = PAGE,
    ) -> None:
        self._pool = pool
        self._vectors = vectors
        self._probe = [1.0 / math.sqrt(dimension)] * dimension  # any vector: filters decide what matches
        self._timeout = timeout_s
        self._page = page

    async def check(self, tenants: Sequence[str] | None = None) -> IntegrityReport:
        live = await self._vectors.live_version()
        report = IntegrityReport(live_version=live)
        all_tenants = tenants is None
        if tenants is None:
            rows = await self._pool.fetch(
                """SELECT tenant_id FROM episodes UNION SELECT tenant_id FROM memory_records
                   UNION SELECT tenant_id FROM episodes_archive ORDER BY 1""",
                timeout=self._timeout,
            )
            tenants = [r["tenant_id"] for r in rows]
        for tenant in tenants:
            report.tenants.append(await self._check_tenant(tenant, live))
        if all_tenants and live is not None:
            listed = sum(t.counts.get("points", 0) for t in report.tenants)
            report.points_of_unknown_tenants = max(0, await self._vectors.count() - listed)
        totals = report.totals()
        missing = sum(totals.get(k, 0) for k in ("missing_episodes", "missing_summaries", "missing_memories"))
        METRICS.integrity_drift_records.set(missing, kind="missing_points")
        METRICS.integrity_drift_records.set(totals.get("orphan_points", 0), kind="orphan_points")
        return report

    async def _check_tenant(self, tenant: str, live: str | None) -> TenantDrift:
        drift = TenantDrift(tenant_id=tenant)
        groups = await self._pool.fetch(
            """SELECT array_agg(id ORDER BY created_at, id) AS ids FROM episodes
               WHERE tenant_id = $1 AND consolidated_at IS NOT NULL GROUP BY session_id, content_hash""",
            tenant,
            timeout=self._timeout,
        )
        records = await self._pool.fetch(
            "SELECT id, kind, model_version FROM memory_records WHERE tenant_id = $1 AND indexed",
            tenant,
            timeout=self._timeout,
        )
        c = drift.counts
        c["episodes_consolidated"] = sum(len(g["ids"]) for g in groups)
        c["episode_contents"] = len(groups)
        c["summaries"] = sum(1 for r in records if r["kind"] == "summary")
        c["memories"] = len(records) - c["summaries"]
        if live is None:  # no collection yet: everything indexable is missing
            drift.missing_episode_ids = [i for g in groups for i in g["ids"]]
            return drift
        found = await self._existing(tenant, "episode", [str(i) for g in groups for i in g["ids"]])
        drift.missing_episode_ids = [
            i for g in groups if not any(str(x) in found for x in g["ids"]) for i in g["ids"]
        ]
        current = [r for r in records if r["model_version"] in (None, live)]
        c["records_of_other_versions"] = len(records) - len(current)
        found = await self._existing(tenant, ["summary", "memory"], [str(r["id"]) for r in current])
        for r in current:
            if str(r["id"]) not in found:
                (drift.missing_summary_ids if r["kind"] == "summary" else drift.missing_memory_ids).append(
                    r["id"]
                )
        points = await self._list_points(tenant)
        by_type = Counter(str(h.payload.get("record_type")) for h in points.values())
        c["points"] = len(points)
        for record_type in ("episode", "chunk", "summary", "memory"):
            c[f"points_{record_type}"] = by_type.get(record_type, 0)
        drift.unlisted_points = max(0, await self._vectors.count(tenant_id=tenant) - len(points))
        drift.orphan_point_ids = await self._orphans(tenant, points)
        drift.unmarked_superseded_ids = await self._unmarked(tenant)
        return drift

    async def _unmarked(self, tenant: str) -> list[uuid.UUID]:
        """Superseded records (Postgres) that have a point which still reads as current."""
        rows = await self._pool.fetch(_SUPERSEDED, tenant, timeout=self._timeout)
        # a long record's chunk points share its record_id: room for a few per record
        found = await self._lookup(tenant, [str(r["id"]) for r in rows], {"current_at": time.time()}, per=4)
        return sorted(uuid.UUID(i) for i in found)

    async def _existing(self, tenant: str, record_type: str | list[str], record_ids: list[str]) -> set[str]:
        """The record ids among ``record_ids`` that have a point of ``record_type`` in the live collection."""
        return await self._lookup(tenant, record_ids, {"record_type": record_type})

    async def _lookup(
        self, tenant: str, record_ids: list[str], filters: dict[str, Any], *, per: int = 1
    ) -> set[str]:
        """The record ids among ``record_ids`` with a point matching ``filters`` (batched lookups)."""
        found: set[str] = set()
        for start in range(0, len(record_ids), LOOKUP_BATCH):
            batch = record_ids[start : start + LOOKUP_BATCH]
            hits = await self._vectors.search(
                self._probe, tenant_id=tenant, k=per * len(batch), filters={**filters, "record_id": batch}
            )
            found.update(str(h.payload.get("record_id")) for h in hits)
        return found

    async def _list_points(self, tenant: str) -> dict[str, VectorHit]:
        """Every point of the tenant, found window by window over ``created_ts`` (a full window is split)."""
        out: dict[str, VectorHit] = {}
        windows = [(_TS_LO, _TS_HI)]
        while windows:
            lo, hi = windows.pop()
            narrow = hi - lo < 1e-3
            k = max(self._page, await self._vectors.count(tenant_id=tenant)) if narrow else self._page
            hits = await self._vectors.search(
                self._probe, tenant_id=tenant, k=k, filters={"created_after": lo, "created_before": hi}
            )
            if len(hits) >= self._page and not narrow:
                mid = (lo + hi) / 2
                windows.extend([(lo, mid), (mid, hi)])
                continue
            out.update((h.id, h) for h in hits)
        return out

    async def _orphans(self, tenant: str, points: dict[str, VectorHit]) -> list[uuid.UUID]:
        """Points whose episode (any state) or memory record no longer exists, or whose memory record is no
        longer indexed (``index`` false: its point should have been deleted)."""
        wanted: dict[str, dict[str, list[str]]] = {"episode": {}, "record": {}}
        for pid, hit in points.items():
            record_type = hit.payload.get("record_type")
            if record_type == "chunk":  # one more point of a long record
                record_type = hit.payload.get("parent_type")
            kind = "episode" if record_type == "episode" else "record"
            wanted[kind].setdefault(str(hit.payload.get("record_id")), []).append(pid)
        orphans: list[uuid.UUID] = []
        for kind, table, also in (("episode", "episodes", ""), ("record", "memory_records", " AND indexed")):
            ids = [rid for rid in wanted[kind] if _is_uuid(rid)]
            rows = await self._pool.fetch(
                f"SELECT id::text AS id FROM {table} WHERE tenant_id = $1 AND id = ANY($2::uuid[]){also}",
                tenant,
                ids,
                timeout=self._timeout,
            )
            present = {r["id"] for r in rows}
            gone = [pids for rid, pids in wanted[kind].items() if rid not in present]
            orphans += [uuid.UUID(pid) for pids in gone for pid in pids]
        return sorted(orphans)

    async def repair(self, report: IntegrityReport) -> dict[str, int]:
        """Re-queue missing points for consolidation and delete orphan points; returns what was done."""
        done: Counter[str] = Counter()
        for t in report.tenants:
            requeue = list(t.missing_episode_ids)
            if t.missing_summary_ids:
                rows = await self._pool.fetch(
                    "SELECT source_ids FROM memory_records WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
                    t.tenant_id,
                    t.missing_summary_ids,
                    timeout=self._timeout,
                )
                requeue += [uuid.UUID(s) for r in rows for s in r["source_ids"] if _is_uuid(s)]
            if requeue:
                status = await self._pool.execute(
                    _MARK_UNCONSOLIDATED, t.tenant_id, requeue, timeout=self._timeout
                )
                done["episodes_marked_unconsolidated"] += int(status.split()[-1])
            if t.orphan_point_ids:
                await self._vectors.delete_ids(t.orphan_point_ids)
                done["orphan_points_deleted"] += len(t.orphan_point_ids)
            done["memories_needing_reput"] += len(t.missing_memory_ids)
            if t.unmarked_superseded_ids:
                rows = await self._pool.fetch(_SUPERSEDED, t.tenant_id, timeout=self._timeout)
                wanted = set(t.unmarked_superseded_ids)
                marks = [
                    (str(r["id"]), str(r["superseded_by"]), r["superseded_at"].timestamp())
                    for r in rows
                    if r["id"] in wanted
                ]
                await self._vectors.mark_superseded(tenant_id=t.tenant_id, marks=marks)
                done["supersessions_marked"] += len(marks)
        report.repaired = dict(done)
        logger.info("integrity repair done", extra={"operation": "integrity_repair", **done})
        return report.repaired


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def run(argv: Sequence[str] | None = None) -> int:
    """CLI: check (and with --repair, repair); prints the JSON report; exit 1 when drift was found."""
    from core.logs import configure_logging
    from core.resources import postgres_pool
    from core.settings import load_settings
    from core.stores.vector_factory import open_vector_index

    parser = argparse.ArgumentParser(prog="python -m jobs.integrity", description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", action="append", help="check only this tenant (repeatable)")
    parser.add_argument("--repair", action="store_true", help="repair the drift (default: report only)")
    parser.add_argument("--dimension", type=int, default=384, help="vector dimension of the live collection")
    parser.add_argument(
        "--max-ids", type=int, default=REPORT_IDS, help="ids listed per drift kind and tenant"
    )
    parser.add_argument(
        "--publish", action="store_true", help="join the Ray cluster; publish the drift gauge"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if args.publish:
        import ray

        from deployments.metrics_backend import install_ray_metrics

        ray.init(address="auto", include_dashboard=False, log_to_driver=False)
        install_ray_metrics()
    pool = await postgres_pool(settings)
    try:
        async with open_vector_index(settings) as vectors:
            checker = IntegrityChecker(pool, vectors, dimension=args.dimension)
            report = await checker.check(args.tenant)
            if args.repair and not report.ok:
                await checker.repair(report)
    finally:
        await pool.close()
    sys.stdout.write(json.dumps(report.to_dict(args.max_ids), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(run()))
