"""Ray job: consolidate episode partitions in parallel, one Ray task per partition.

    ray job submit -- python -m jobs.consolidate [--partitions 0,1,5-7] [--parallelism N] [--run-id ID]

Connects to the running cluster (``ray.init(address="auto")``) or starts a local Ray. Each task
drains, summarises, embeds and upserts its partition under a Postgres advisory lock
(:func:`core.consolidation.partition.consolidate_partition`). When the hybridmem Serve app is running,
tasks embed through its Embedder deployment (driving its autoscaling) and, with an embedded vector
store, write through its Retriever deployment (the engine's owner); otherwise they load the model
in-process and talk to the Qdrant server. An embedded store with no app running can only be opened by
one process, so then the partitions run as asyncio tasks inside this driver instead. Prints one line per
finished partition and the run record as JSON last; exits 1 when any partition failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import ray

from core.consolidation.partition import PartitionStores
from core.consolidation.runner import (
    PartitionOutcome,
    open_summariser,
    parse_partitions,
    run_consolidation,
    run_partition,
)
from core.consolidation.runs import RunRecord, RunStore
from core.embedding.loader import load_embedder
from core.embedding.types import TextEmbedder
from core.ports import VectorIndex
from core.resources import open_resources, postgres_pool
from core.retrieval.bm25_sparse import bm25_sparse
from core.settings import Settings, load_settings
from core.stores.vector_factory import open_vector_index

log = logging.getLogger(__name__)

APP_NAME = "hybridmem"
ENGINE_OWNER = "Retriever"  # the deployment that owns an embedded semantic engine
TASK_RETRIES = 2  # a task that dies with its worker is rerun; the partition pass is idempotent


def connect_ray(address: str | None = None) -> None:
    """Join the cluster at ``address``/RAY_ADDRESS or a running local one; else start a local Ray."""
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=target or "auto", log_to_driver=False)
    except (ConnectionError, RuntimeError):
        if target:
            raise
        ray.init(include_dashboard=False, log_to_driver=False)


def app_deployments(app_name: str = APP_NAME) -> set[str]:
    """Deployment names of the running Serve app (empty when Serve or the app is not running)."""
    from ray import serve

    try:
        status = serve.status()
    except Exception:  # no Serve controller in this cluster: nothing to route through
        return set()
    app = status.applications.get(app_name)
    return set(app.deployments) if app is not None else set()


@contextlib.asynccontextmanager
async def _job_stores(
    settings: Settings, *, vector_handle: bool, embedder_handle: bool
) -> AsyncIterator[tuple[Any, PartitionStores]]:
    """Everything one partition task needs, opened in the task's process and closed after it."""
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        vectors: VectorIndex
        if vector_handle:
            from ray import serve

            from deployments.retriever import HandleVectorIndex

            vectors = HandleVectorIndex(serve.get_deployment_handle(ENGINE_OWNER, app_name=APP_NAME))
        else:
            vectors = await stack.enter_async_context(open_vector_index(settings))
        embedder: TextEmbedder
        if embedder_handle:
            from ray import serve

            from deployments.embedder import HandleEmbedder

            embedder = HandleEmbedder(serve.get_deployment_handle("Embedder", app_name=APP_NAME))
        else:
            embedder = await load_embedder(settings.embedding)
        summariser = await stack.enter_async_context(open_summariser(settings))
        stores = PartitionStores(
            pool=res.pool, episodic=res.episodic, embedder=embedder, vectors=vectors,
            summariser=summariser, buffers=res.working, lexical=bm25_sparse(settings.retrieval),
        )  # fmt: skip
        yield res, stores


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def consolidate_partition_task(
    settings_data: dict[str, Any], partition: int, run_id: str, vector_handle: bool, embedder_handle: bool
) -> PartitionOutcome:
    """One partition, in a Ray worker: open stores, run the pass with its bookkeeping, close."""
    settings = load_settings(settings_data)

    async def go() -> PartitionOutcome:
        async with _job_stores(settings, vector_handle=vector_handle, embedder_handle=embedder_handle) as (
            res,
            stores,
        ):
            return await run_partition(
                partition, run_id=uuid.UUID(run_id), settings=settings, stores=stores, runs=RunStore(res.pool)
            )

    return asyncio.run(go())


async def _with_runs(settings: Settings, fn: Callable[[RunStore], Any]) -> Any:
    pool = await postgres_pool(settings)
    try:
        return await fn(RunStore(pool))
    finally:
        await pool.close()


def fan_out(
    settings: Settings,
    *,
    partitions: Sequence[int],
    parallelism: int,
    run_id: uuid.UUID | None = None,
    trigger: str = "job",
    progress: Callable[[PartitionOutcome], None] | None = None,
) -> RunRecord:
    """Run the partitions as Ray tasks, at most ``parallelism`` in flight; returns the finished record."""
    deployments = app_deployments()
    embedded = settings.qdrant_backend != "server"
    vector_handle = embedded and ENGINE_OWNER in deployments
    if embedded and not vector_handle:
        log.warning("embedded vector store and no running app: consolidating inside the driver")
        return asyncio.run(
            run_consolidation(
                settings,
                partitions=partitions,
                parallelism=parallelism,
                trigger=trigger,
                run_id=run_id,
                progress=progress,
            )
        )
    embedder_handle = "Embedder" in deployments
    record = asyncio.run(
        _with_runs(settings, lambda runs: runs.create(partitions=partitions, trigger=trigger, run_id=run_id))
    )
    data = settings.model_dump(mode="json")
    queue = list(partitions)
    in_flight: dict[Any, int] = {}
    failures: list[tuple[int, str]] = []
    while queue or in_flight:
        while queue and len(in_flight) < parallelism:
            p = queue.pop(0)
            ref = consolidate_partition_task.remote(data, p, str(record.id), vector_handle, embedder_handle)
            in_flight[ref] = p
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            p = in_flight.pop(ref)
            try:
                outcome: PartitionOutcome = ray.get(ref)
            except (ray.exceptions.RayError, OSError) as exc:  # the task itself died (after its retries)
                outcome = PartitionOutcome(partition=p, status="failed", error=f"{type(exc).__name__}: {exc}")
                failures.append((p, outcome.error or ""))
            if progress is not None:
                progress(outcome)

    async def finish(runs: RunStore) -> RunRecord:
        for p, error in failures:
            await runs.add_error(record.id, partition=p, error=error)
            await runs.set_partition(record.id, p, status="failed")
        return await runs.finish(record.id)

    finished: RunRecord = asyncio.run(_with_runs(settings, finish))
    return finished


def say(line: str, *, err: bool = False) -> None:
    """CLI output of the job (what `ray job logs` and `hybridmem consolidate --wait` show)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _print_progress(total: int) -> Callable[[PartitionOutcome], None]:
    done = [0]

    def show(o: PartitionOutcome) -> None:
        done[0] += 1
        extra = f" error={o.error}" if o.error else ""
        say(
            f"[{done[0]}/{total}] partition {o.partition}: {o.status} episodes={o.episodes} "
            f"duplicates={o.duplicates} summaries={o.summaries} drained={o.drained} {o.seconds:.1f}s{extra}"
        )

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.consolidate", description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", help="e.g. 0,1,5-7 (default: all)")
    parser.add_argument("--parallelism", type=int, help="partitions in flight (default: settings)")
    parser.add_argument("--run-id", help="run record id (the CLI/API create it up front; resumable)")
    parser.add_argument("--trigger", default="job", help="recorded on the run (job, cli, api, schedule)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, a running cluster, or local)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings()
    try:
        partitions = parse_partitions(args.partitions, settings)
    except ValueError as exc:
        say(f"error: {exc}", err=True)
        return 2
    parallelism = max(1, args.parallelism or settings.consolidation.parallelism)
    run_id = uuid.UUID(args.run_id) if args.run_id else None
    connect_ray(args.address)
    say(f"consolidating {len(partitions)} partitions, {parallelism} at a time")
    record = fan_out(
        settings, partitions=partitions, parallelism=parallelism, run_id=run_id, trigger=args.trigger,
        progress=_print_progress(len(partitions)),
    )  # fmt: skip
    say(json.dumps(record.model_dump(mode="json")))
    return 0 if record.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
