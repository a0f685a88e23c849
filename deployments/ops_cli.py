"""CLI operations against a running cluster: submit consolidation jobs, show runs, summarise status."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

import asyncpg

from core.consolidation.runs import RunRecord, RunStore
from core.settings import Settings, load_settings

TERMINAL = {"succeeded", "failed", "partial"}


async def _with_runs(settings: Settings, fn: Any) -> Any:
    if not settings.postgres.dsn:
        raise SystemExit("error: no Postgres DSN (set HYBRIDMEM_POSTGRES__DSN)")
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=2, timeout=10)
    try:
        return await fn(RunStore(pool), pool)
    finally:
        await pool.close()


def submit_consolidation(
    *, address: str, partitions: str | None, parallelism: int | None, wait: bool, timeout_s: float
) -> int:
    """Submit ``python -m jobs.consolidate`` through Ray's Job Submission API; optionally follow it."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    settings = load_settings()
    run_id = uuid.uuid4()
    args = [sys.executable, "-m", "jobs.consolidate", "--run-id", str(run_id)]
    if partitions:
        args += ["--partitions", partitions]
    if parallelism:
        args += ["--parallelism", str(parallelism)]
    env = {k: v for k, v in os.environ.items() if k.startswith("HYBRIDMEM_")}
    client = JobSubmissionClient(address)
    submit_deadline = time.monotonic() + 60
    while True:
        try:
            job_id = client.submit_job(
                entrypoint=" ".join(args),
                runtime_env={"env_vars": env},
                submission_id=f"hybridmem-consolidate-{run_id.hex[:12]}",
                metadata={"hybridmem_run_id": str(run_id)},
            )
            break
        except RuntimeError as exc:
            # A cluster that just started has no job agent yet: wait for it rather than fail.
            if "No available agent" not in str(exc) or time.monotonic() > submit_deadline:
                raise
            time.sleep(2.0)
    print(f"submitted job {job_id} (run {run_id})")
    if not wait:
        return 0
    from tqdm import tqdm

    deadline = time.monotonic() + timeout_s
    bar: tqdm[Any] | None = None

    async def poll() -> RunRecord | None:
        async def get(runs: RunStore, _pool: Any) -> RunRecord | None:
            recent = [r for r in await runs.recent(limit=50) if r.id == run_id]
            return recent[0] if recent else None

        result: RunRecord | None = await _with_runs(settings, get)
        return result

    status = client.get_job_status(job_id)
    record: RunRecord | None = None
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        record = asyncio.run(poll())
        if record is not None:
            if bar is None:
                bar = tqdm(total=len(record.partitions), unit="partition", desc="consolidating")
            done = sum(1 for p in record.partitions if record.partition_status(p) not in (None, "running"))
            bar.n = done
            bar.set_postfix(episodes=record.total("episodes"), status=record.status)
            bar.refresh()
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(1.0)
    if bar is not None:
        bar.close()
    if record is not None:
        print(json.dumps(record.model_dump(mode="json"), indent=2))
    if status != JobStatus.SUCCEEDED:
        print(f"job {job_id} ended {status}; logs:\n{client.get_job_logs(job_id)[-4000:]}", file=sys.stderr)
        return 1
    return 0


def show_runs(run_id: str | None, limit: int) -> int:
    settings = load_settings()

    async def fetch(runs: RunStore, _pool: Any) -> list[RunRecord]:
        if run_id:
            return [await runs.get(uuid.UUID(run_id))]
        return await runs.recent(limit=limit)

    records: list[RunRecord] = asyncio.run(_with_runs(settings, fetch))
    if run_id:
        print(json.dumps(records[0].model_dump(mode="json"), indent=2))
        return 0
    print(f"{'run id':36}  {'status':10} {'trigger':9} {'started':20} {'episodes':>8} {'errors':>6}")
    for r in records:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{r.id!s:36}  {r.status:10} {r.trigger:9} {started:20} "
            f"{r.total('episodes'):>8} {len(r.errors):>6}"
        )
    return 0


def status(url: str, app_name: str = "hybridmem") -> int:
    """Deployments and replicas (Serve), store health (/readyz) and consolidation backlog (Postgres)."""
    import httpx

    settings = load_settings()
    ok = True
    try:
        ready = httpx.get(f"{url}/readyz", timeout=5)
        print(f"app {url}: {ready.json().get('status')}")
        for store, state in ready.json().get("stores", {}).items():
            print(f"  store {store:9} {state}")
        ok = ready.status_code == 200 and ready.json().get("status") == "ok"  # 200 also while degraded
    except httpx.HTTPError as exc:
        print(f"app {url}: unreachable ({exc})")
        ok = False
    try:
        import ray
        from ray import serve

        ray.init(address="auto", log_to_driver=False, logging_level=logging.ERROR)
        app = serve.status().applications.get(app_name)
        if app is None:
            print(f"serve: no application {app_name!r}")
        else:
            print(f"serve app {app_name}: {app.status}")
            for name, dep in app.deployments.items():
                replicas = ", ".join(f"{k}={v}" for k, v in dep.replica_states.items())
                print(f"  {name:22} {dep.status:10} {replicas}")
        ray.shutdown()
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"serve: no Ray cluster reachable ({exc})")
    if settings.postgres.dsn:

        async def backlog(_runs: RunStore, pool: Any) -> list[Any]:
            rows: list[Any] = await pool.fetch(
                "SELECT partition, count(*) AS n FROM episodes WHERE consolidated_at IS NULL "
                "GROUP BY partition ORDER BY partition"
            )
            return rows

        rows = asyncio.run(_with_runs(settings, backlog))
        total = sum(r["n"] for r in rows)
        print(f"consolidation backlog: {total} episodes in {len(rows)} partitions")
        for r in rows[:32]:
            print(f"  partition {r['partition']:>4}: {r['n']}")
    return 0 if ok else 1
