"""Fault suite: the real app under a bounded mixed load while its stores and replicas fail, then a ledger.

Each test injects one fault while two clients write episodes (single and batch) and memories and two
read (search, context, session context), all through our own client (its retries on 429/503 honouring
``Retry-After`` included). The last test consolidates everything and checks the ledger: every
acknowledged write is in Postgres exactly once and, once consolidated, has exactly one vector point;
the tiers' counts agree. The tests run in file order and share one app (module scope); the summary
table is printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from hybridmem_client import AsyncHybridMemClient

from core.ids import deterministic_id
from core.settings import RetrievalSettings
from tests.faults import prometheus as prom
from tests.faults import report
from tests.faults.load import Load, Phase, summary, until
from tests.faults.servers import FaultStack

pytestmark = [pytest.mark.faults, pytest.mark.serve, pytest.mark.integration, pytest.mark.slow]

WARMUP_S = 2.0  # load before the fault
OUTAGE_S = 6.0  # how long a stopped server stays down
REPLACE_TIMEOUT_S = 150.0  # a killed replica must be back (model load included) within this


WRITERS, READERS, PAUSE_S = 2, 2, 0.1


@pytest.fixture(scope="module")
def load(fault_stack: FaultStack) -> Load:
    report.SETUP.update(
        writers=WRITERS, readers=READERS, pause_s=PAUSE_S, warmup_s=WARMUP_S, outage_s=OUTAGE_S,
        retry="hybridmem_client RetryPolicy() defaults: 4 attempts, 429/503 retried honouring Retry-After",
    )  # fmt: skip
    return Load(fault_stack.base_url, fault_stack.key, writers=WRITERS, readers=READERS, pause_s=PAUSE_S)


@pytest.fixture(scope="module", autouse=True)
def prometheus(
    fault_stack: FaultStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[prom.Prometheus | None]:
    """A real Prometheus scraping the app from the first fault to the last (None without the binary)."""
    if prom.binary() is None:
        yield None
        return
    import ray

    node = ray._private.worker.global_worker.node
    app = fault_stack.base_url.removeprefix("http://")
    with prom.running(
        tmp_path_factory.mktemp("prometheus"),
        ray_metrics=f"{node.node_ip_address}:{node.metrics_export_port}",
        app=app,
    ) as server:
        yield server


@pytest.fixture
async def hm(fault_stack: FaultStack) -> AsyncIterator[AsyncHybridMemClient]:
    async with AsyncHybridMemClient(fault_stack.base_url, fault_stack.key, timeout=60.0) as client:
        yield client


async def _stores(base_url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        stores: dict[str, str] = (await client.get("/readyz")).json()["stores"]
        return stores


async def _still_serving(base_url: str) -> None:
    """Readiness during a store outage: 200 (the app still serves), the outage named in the body."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "degraded", r.text


async def _unavailable(base_url: str, store: str) -> bool:
    return (await _stores(base_url)).get(store, "").startswith("unavailable")


async def _ready(base_url: str) -> bool:
    return all(v == "ok" for v in (await _stores(base_url)).values())


def _replica_pids(deployment: str) -> set[int]:
    """Processes of the deployment's replicas (Ray titles them ``ray::ServeReplica:<app>:<deployment>``)."""
    title = f"ray::ServeReplica:hybridmem:{deployment}"
    pids = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        names = [proc.info["name"] or "", *(proc.info["cmdline"] or [])[:1]]
        if any(n == title or n.startswith(title + ".") for n in names):
            pids.add(proc.info["pid"])
    return pids


async def _replaced(deployment: str, old: set[int]) -> bool:
    from ray import serve

    if not _replica_pids(deployment) - old:
        return False
    status = await asyncio.to_thread(serve.status)
    return str(status.applications["hybridmem"].deployments[deployment].status) in (
        "HEALTHY",
        "DeploymentStatus.HEALTHY",
    )


async def _kill_during_a_run(hm: AsyncHybridMemClient, phase: Phase, deployment: str) -> tuple[Any, float]:
    """Start a consolidation run, SIGKILL the deployment's replicas at once, and wait for Serve to have a
    new one healthy; (the run as started, seconds until the replacement)."""
    old = _replica_pids(deployment)
    run = await hm.consolidate()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    phase.mark("down")
    recovery = await until(
        lambda: _replaced(deployment, old), timeout_s=REPLACE_TIMEOUT_S, what=f"a new {deployment}"
    )
    return run, recovery


def _record(phase: Phase, recovery_s: float | None, note: str = "") -> None:
    report.record(
        phase.name, summary(phase), recovery_s=None if recovery_s is None else round(recovery_s, 1), note=note
    )
    report.dump_ops(phase)


async def _back(phase: Phase, base_url: str) -> float:
    """Seconds from lifting the fault ("up") until every store answers /readyz again."""
    await until(lambda: _ready(base_url), timeout_s=60, what=f"readyz ok after {phase.name}")
    return time.monotonic() - phase.marks["up"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fivexx(phase: Phase) -> collections.Counter[tuple[int, bool]]:
    return collections.Counter(a for op in phase.ops for a in op.attempts if a[0] >= 500)


# ---- faults ------------------------------------------------------------------------------------------
# Marks: "down" once the fault is in place, "up" when it is lifted (before a server restarts).


async def test_redis_stop_start(fault_stack: FaultStack, load: Load) -> None:
    """Redis down: writes still acknowledged (Postgres), session reads fall back, cache bypassed, no 5xx."""
    base = fault_stack.base_url
    async with load.phase("redis stop/start", "redis") as ph:
        await asyncio.sleep(WARMUP_S)
        await asyncio.to_thread(fault_stack.valkey.stop)
        ph.mark("down")
        await until(lambda: _unavailable(base, "redis"), timeout_s=15, what="readyz naming redis")
        await _still_serving(base)
        await asyncio.sleep(OUTAGE_S)
        ph.mark("up")
        await asyncio.to_thread(fault_stack.valkey.start)
        recovery = await _back(ph, base)
        await ph.settle()
    _record(ph, recovery)
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed
    assert not _fivexx(ph)
    during = ph.during()
    sessions = [op for op in during if op.kind == "session"]
    assert sessions, "no session read ran while Redis was down"
    assert all(op.source == "postgres" and op.degraded == ["working"] for op in sessions)
    assert all("working" in op.degraded for op in during if op.kind == "search")  # session-filtered
    assert any(op.kind == "memory" for op in during), "no memory was embedded without the cache"


async def test_postgres_stop_start(fault_stack: FaultStack, load: Load) -> None:
    """Postgres down: writes answer 503 + Retry-After (never acknowledged), the client retries; reads go on
    without the episodic tier."""
    base = fault_stack.base_url
    async with load.phase("postgres stop/start", "postgres") as ph:
        await asyncio.sleep(WARMUP_S)
        await asyncio.to_thread(fault_stack.postgres.stop)
        ph.mark("down")
        await until(lambda: _unavailable(base, "postgres"), timeout_s=15, what="readyz naming postgres")
        await _still_serving(base)
        await asyncio.sleep(OUTAGE_S)
        ph.mark("up")
        await asyncio.to_thread(fault_stack.postgres.start)
        recovery = await _back(ph, base)
        await ph.settle()
    _record(ph, recovery)
    statuses = _fivexx(ph)
    assert statuses, "no client saw the outage"
    assert set(statuses) == {(503, True)}, f"5xx other than 503 + Retry-After: {statuses}"
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert all(op.is_write and op.error == "503 store_unavailable" for op in ph.ops if not op.acked), failed
    assert any(op.acked and op.retried for op in ph.writes), "no write was acknowledged after a retry"
    reads = [op for op in ph.during() if op.kind in ("search", "context")]
    assert reads and all(op.acked and "episodic" in op.degraded for op in reads)


async def test_embedder_replica_killed(fault_stack: FaultStack, load: Load) -> None:
    """The Embedder's process dies mid-load: Serve replaces it; clients see retries at most."""
    async with load.phase("embedder replica killed", "embedder") as ph:
        await asyncio.sleep(WARMUP_S)
        old = _replica_pids("Embedder")
        assert old, "no Embedder replica process found"
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        ph.mark("down")
        recovery = await until(
            lambda: _replaced("Embedder", old), timeout_s=REPLACE_TIMEOUT_S, what="a new Embedder replica"
        )
        ph.mark("up")
        await ph.settle()
    _record(ph, recovery)
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed


async def test_retriever_hangs(fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient) -> None:
    """The Retriever, owner of the embedded engine, stops answering (its process paused): the Ingress
    answers reads from Postgres and Redis, naming the semantic tier degraded, and a consolidation run
    pauses and then finishes once the engine answers again."""
    async with load.phase("retriever (engine owner) hangs", "retriever-hang") as ph:
        await asyncio.sleep(WARMUP_S)
        (pid,) = _replica_pids("Retriever")
        run = await hm.consolidate()
        os.kill(pid, signal.SIGSTOP)
        ph.mark("down")
        try:
            await asyncio.sleep(OUTAGE_S)
        finally:
            ph.mark("up")
            os.kill(pid, signal.SIGCONT)
        recovery = await _back(ph, fault_stack.base_url)
        done = await hm.wait_consolidation(run.id, poll_s=0.5, timeout_s=REPLACE_TIMEOUT_S)
        await ph.settle()
    _record(ph, recovery, note=f"consolidation run in flight across the hang: {done.status}")
    # Reads that were waiting on the paused Retriever: in flight at some point of the window. (A read that
    # fits entirely inside the 6 s window must start within ~1 s of the pause, as the fallback takes 5 s:
    # whether one does depends on where each reader is in its cycle, so that is not what is counted.)
    down, up = ph.marks["down"], ph.marks["up"]
    reads = [op for op in ph.ops if op.kind in ("search", "context") and op.ended > down and op.started < up]
    assert reads and all(op.acked for op in reads)
    assert any("semantic" in op.degraded for op in reads), [op.degraded for op in reads]
    assert done.status == "succeeded", done.errors
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed


async def test_retriever_killed(fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient) -> None:
    """The Retriever, owner of the embedded engine, dies during a consolidation: reads degrade, the run
    records what failed, Serve replaces the owner (reopening the engine from disk), and the ledger's run
    picks the rest up."""
    async with load.phase("retriever (engine owner) killed", "retriever-kill") as ph:
        await asyncio.sleep(WARMUP_S)
        run, recovery = await _kill_during_a_run(hm, ph, "Retriever")
        ph.mark("up")
        first = await hm.wait_consolidation(run.id, poll_s=0.5, timeout_s=REPLACE_TIMEOUT_S)
        await ph.settle()
    failed_partitions = sorted(p for p, c in first.counts.items() if c.get("status") == "failed")
    _record(
        ph, recovery, note=f"consolidation run in flight at the kill: {first.status}, failed partitions "
        f"{failed_partitions or 'none'} (the ledger's run redoes any)",
    )  # fmt: skip
    reads = [op for op in ph.ops if op.kind in ("search", "context")]
    assert all(op.acked for op in reads), [(op.kind, op.error) for op in reads if not op.acked]
    # A read waits for the Retriever up to retrieval.fallback_after_s, then answers without it. When
    # Serve replaced the owner sooner, reads only waited (none had to degrade); otherwise some did.
    fallback_s = RetrievalSettings().fallback_after_s
    if recovery > fallback_s + 1.0:
        assert any("semantic" in op.degraded for op in ph.during() if op.kind in ("search", "context"))
    bad = [(op.kind, op.error) for op in ph.ops if not op.acked and op.error != "503 store_unavailable"]
    assert not bad, bad


async def test_redis_restarted_empty(fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient) -> None:
    """Redis crashes and comes back with nothing (its disk lost) while sessions are active: writes stay
    acknowledged, and each session's recent turns are rebuilt from Postgres, the turns from before the
    loss included."""
    base = fault_stack.base_url
    async with load.phase("redis restarted empty", "redis-empty") as ph:
        await asyncio.sleep(WARMUP_S)
        before = {op.sources[0] for op in ph.ops if op.acked and op.kind == "episode"}
        await asyncio.to_thread(fault_stack.valkey.stop)
        ph.mark("down")
        await asyncio.to_thread(fault_stack.valkey.wipe)
        await until(lambda: _unavailable(base, "redis"), timeout_s=15, what="readyz naming redis")
        ph.mark("up")
        await asyncio.to_thread(fault_stack.valkey.start)
        recovery = await _back(ph, base)
        await ph.settle()
    _record(ph, recovery, note="Redis data directory deleted before the restart")
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed
    assert not _fivexx(ph)
    assert before, "no episode was acknowledged before the loss"
    recent = await hm.session_context("redis-empty-w0", limit=100)
    ids = {e.id for e in recent.episodes}
    assert {
        deterministic_id(fault_stack.tenant, "episode", s) for s in before if s.startswith("redis-empty-w0-")
    } <= ids


async def test_consolidation_worker_killed(fault_stack: FaultStack, load: Load) -> None:
    """A consolidation job (``python -m jobs.consolidate``: partitions as Ray tasks) loses the Ray worker
    process of a partition to SIGKILL mid-run: Ray runs the task again, the partition's advisory lock died
    with the worker's connection, and the run finishes every partition."""
    from core.settings import load_settings
    from jobs.consolidate import fan_out

    settings = load_settings(fault_stack.settings)
    async with load.phase("consolidation worker killed", "worker-kill") as ph:
        await asyncio.sleep(WARMUP_S)
        partitions = list(range(settings.consolidation.n_partitions))
        job = asyncio.ensure_future(
            asyncio.to_thread(fan_out, settings, partitions=partitions, parallelism=2, trigger="fault-suite")
        )
        pid = await _first_pid("ray::consolidate_partition_task", timeout_s=60)
        os.kill(pid, signal.SIGKILL)
        ph.mark("down")
        ph.mark("up")
        done = await asyncio.wait_for(job, timeout=REPLACE_TIMEOUT_S)
        recovery = time.monotonic() - ph.marks["up"]
        await ph.settle()
    _record(ph, recovery, note=f"partition worker (pid {pid}) killed mid-run; job run {done.status}")
    assert done.status == "succeeded", done.errors
    assert all(c.get("status") == "done" for c in done.counts.values()), done.counts
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed


async def test_scheduler_killed(fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient) -> None:
    """SIGKILL of the ConsolidationScheduler replica while its run is in progress: Serve starts a new
    replica, which resumes the run under the same id, so the client waiting on it sees it succeed."""
    async with load.phase("scheduler killed", "scheduler-kill") as ph:
        await asyncio.sleep(WARMUP_S)
        run, recovery = await _kill_during_a_run(hm, ph, "ConsolidationScheduler")
        was = run.status
        ph.mark("up")
        done = await hm.wait_consolidation(run.id, poll_s=0.5, timeout_s=REPLACE_TIMEOUT_S)
        await ph.settle()
    _record(ph, recovery, note=f"run {was} at the kill, resumed by the new replica: {done.status}")
    assert done.status == "succeeded", done.errors
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed


async def test_consolidation_under_cpu_contention(
    fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient
) -> None:
    """Another process keeps every core busy through a consolidation run (a second app on the machine):
    slow is not failed, so every partition is done; a timed-out pass is retried, and its retry noted."""
    hogs: list[subprocess.Popen[bytes]] = []
    async with load.phase("consolidation under cpu contention", "cpu-hog") as ph:
        await asyncio.sleep(WARMUP_S)
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
        ]
        try:
            ph.mark("down")
            run = await hm.consolidate()
            done = await hm.wait_consolidation(run.id, poll_s=0.5, timeout_s=600)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        ph.mark("up")
        await ph.settle()
    retries = sum(int(c.get("retries", 0)) for c in done.counts.values())
    _record(
        ph,
        0.0,
        note=f"{len(hogs)} busy processes through the run: {done.status}, {retries} partition retries",
    )
    assert done.status == "succeeded", done.errors
    assert all(c.get("status") == "done" for c in done.counts.values()), done.counts
    failed = [(op.kind, op.error) for op in ph.ops if not op.acked]
    assert not failed, failed


async def _first_pid(title: str, *, timeout_s: float) -> int:
    """The first process whose title starts with ``title`` (Ray names a worker after the task it runs)."""
    found: list[int] = []

    async def running() -> bool:
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            names = [proc.info["name"] or "", *(proc.info["cmdline"] or [])[:1]]
            if any(n.startswith(title) for n in names):
                found.append(proc.info["pid"])
                return True
        return False

    await until(running, timeout_s=timeout_s, what=f"a process titled {title}")
    return found[0]


# ---- ledger ------------------------------------------------------------------------------------------


async def test_ledger(fault_stack: FaultStack, load: Load, hm: AsyncHybridMemClient) -> None:
    """Consolidate everything, then: acknowledged = present exactly once, one point per consolidated
    episode and per memory, and the tiers' counts agree."""
    from ray import serve

    from deployments.retriever import HandleVectorIndex

    run = await hm.consolidate()
    done = await hm.wait_consolidation(run.id, poll_s=0.5, timeout_s=180)
    assert done.status == "succeeded", done.errors
    tenant = fault_stack.tenant
    conn = await asyncpg.connect(fault_stack.dsn, timeout=10)
    try:
        episodes = await conn.fetch(
            "SELECT id, content, consolidated_at FROM episodes WHERE tenant_id = $1", tenant
        )
        memories = await conn.fetch(
            "SELECT id, kind, content FROM memory_records WHERE tenant_id = $1", tenant
        )
    finally:
        await conn.close()
    vectors = HandleVectorIndex(serve.get_deployment_handle("Retriever", app_name="hybridmem"))
    probe = [1.0] + [0.0] * 383
    points: dict[tuple[str, str], list[str]] = collections.defaultdict(list)  # (type, id) -> contents
    for h in await vectors.search(probe, tenant_id=tenant, k=100_000):
        points[(str(h.payload["record_type"]), str(h.payload["record_id"]))].append(
            _digest(h.payload["content"])
        )

    # Content hashes, not primary keys: a row or point whose text differs from what was sent is lost,
    # and the same text stored twice (under any id) is a duplicate.
    rows = {("episode", str(r["id"])): _digest(r["content"]) for r in episodes}
    rows |= {("memory", str(r["id"])): _digest(r["content"]) for r in memories}
    written = [*episodes, *(r for r in memories if r["kind"] != "summary")]  # summaries are derived
    copies = collections.Counter(_digest(r["content"]) for r in written)
    problems: list[str] = []
    for ph in load.phases:
        lost = duplicated = 0
        for sid, text in ph.acked_contents.items():
            kind = "memory" if sid in set(ph.acked_memory_sources) else "episode"
            key = (kind, str(deterministic_id(tenant, kind, sid)))
            sent = _digest(text)
            lost += rows.get(key) != sent or sent not in points.get(key, [])
            duplicated += copies[sent] > 1 or len(points.get(key, [])) > 1
        report.settle(ph.name, lost=lost, duplicated=duplicated)
        if lost or duplicated:
            problems.append(f"{ph.name}: lost {lost}, duplicated {duplicated}")

    unconsolidated = sum(1 for r in episodes if r["consolidated_at"] is None)
    episode_points = sum(len(c) for (kind, _), c in points.items() if kind == "episode")
    # memory_records holds the API's memories and consolidation's session summaries
    memory_points = sum(len(c) for (kind, _), c in points.items() if kind in ("memory", "summary"))
    assert not problems, problems
    assert unconsolidated == 0
    assert episode_points == len(episodes), (episode_points, len(episodes))
    assert memory_points == len(memories), (memory_points, len(memories))


# ---- Prometheus in the loop --------------------------------------------------------------------------
# Series that only a fault this suite does not inject can create: query -> why. Everything else on the
# dashboard and in the alert rules must return data after the suite.
_NO_MODEL_FAILURE = "no model call fails: no fault here breaks the model itself"
_NO_CONSOLIDATION_FAILURE = "no consolidation step fails for good: the runs retry through every fault here"
NEEDS_OTHER_FAULTS = {
    "sum by (backend) (rate(ray_hybridmem_embedding_errors_total[1m]))": _NO_MODEL_FAILURE,
    "sum by (stage) (rate(ray_hybridmem_consolidation_failures_total[1m]))": _NO_CONSOLIDATION_FAILURE,
    "sum by (stage) (increase(ray_hybridmem_consolidation_failures_total[1h]))": _NO_CONSOLIDATION_FAILURE,
    (
        "sum(increase(ray_hybridmem_consolidation_failures_total[30m])) > bool 0 or "
        'sum(increase(ray_hybridmem_consolidation_runs_total{outcome="failed"}[30m])) > bool 0'
    ): _NO_CONSOLIDATION_FAILURE,
}
FAULT_ROWS = {
    "redis stop/start", "postgres stop/start", "embedder replica killed", "retriever (engine owner) hangs",
    "retriever (engine owner) killed", "redis restarted empty", "consolidation worker killed",
    "scheduler killed", "consolidation under cpu contention",
}  # fmt: skip


def _maintenance_jobs(settings: dict[str, Any]) -> Any:
    """An actor that runs the integrity check and a retention pass in the cluster, publishing their metrics
    through Ray as the jobs do, and stays alive until killed (Ray exports a live process's metrics)."""
    import ray

    @ray.remote(num_cpus=0)
    class Maintenance:
        async def run(self) -> dict[str, Any]:
            from ray import serve

            from core.resources import postgres_pool
            from core.settings import load_settings
            from deployments.metrics_backend import install_ray_metrics
            from deployments.retriever import HandleVectorIndex
            from jobs.integrity import IntegrityChecker
            from jobs.retention import run_retention

            install_ray_metrics()
            conf = load_settings(settings)
            pool = await postgres_pool(conf)
            try:
                vectors = HandleVectorIndex(serve.get_deployment_handle("Retriever", app_name="hybridmem"))
                drift = await IntegrityChecker(pool, vectors, dimension=384).check()
            finally:
                await pool.close()
            kept = await run_retention(conf, older_than_days=0, idle_days=None, keep_vectors=True)
            return {"drift_ok": drift.ok, "archived": kept["archive"]["episodes"]}

    return Maintenance.remote()


async def test_prometheus_sees_every_panel_and_alert(
    prometheus: prom.Prometheus | None, fault_stack: FaultStack, hm: AsyncHybridMemClient
) -> None:
    """After the faults above, a real Prometheus that scraped the app throughout answers every query of the
    Grafana dashboard and every alert expression (in its ``bool`` form: data whenever the alert's inputs
    exist) with data, and evaluates every alert rule without error."""
    if prometheus is None:
        message = f"Prometheus is not installed: {prom.HOW_TO_GET}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    missing_rows = FAULT_ROWS - set(report.ROWS)
    if missing_rows:
        pytest.skip(f"needs the whole fault suite in this run (not run: {sorted(missing_rows)})")
    import ray

    # What the faults do not exercise: a truncated text, a cache hit, an integrity check, a retention pass.
    long_text = "a remarkably long sentence about window seats and budgets " * 80
    await hm.embed([long_text])
    await hm.embed([long_text])
    jobs = _maintenance_jobs(fault_stack.settings)
    try:
        done = await jobs.run.remote()
        assert done["archived"] > 0, done
        queries = [(f"panel {title!r}", q) for title, q in prom.panel_queries()]
        queries += [(f"alert {name}", prom.as_bool(expr)) for name, expr in prom.alert_expressions()]
        # Ray exports every 10 s and Prometheus scrapes every 5 s: 90 s is plenty for a plain query. A
        # subquery at a 1-minute step (the backlog alert's deriv(...[30m:1m])) has data only once its
        # series spans two minute boundaries, up to 2 minutes after its first sample: give those 150 s.
        started = time.monotonic()

        def waited_enough(q: str) -> bool:
            return time.monotonic() - started > (150 if ":1m]" in q else 90)

        while True:
            empty = [
                (what, q) for what, q in queries if q not in NEEDS_OTHER_FAULTS and not prometheus.query(q)
            ]
            if all(waited_enough(q) for _, q in empty):
                break
            await asyncio.sleep(3)
        assert not empty, "no data for:\n" + "\n".join(f"{w}: {q}" for w, q in empty)
        for query in NEEDS_OTHER_FAULTS:
            prometheus.query(query)  # still a valid query over declared metrics
        rules = prometheus.rules()
        assert {r["name"] for r in rules} == {name for name, _ in prom.alert_expressions()}
        assert [r["name"] for r in rules if r["health"] != "ok"] == [], rules
        down = [t["scrapeUrl"] for t in prometheus.targets() if t["health"] != "up"]
        assert down == []
    finally:
        ray.kill(jobs)
