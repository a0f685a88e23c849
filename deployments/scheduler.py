"""ConsolidationScheduler deployment: consolidation on an interval and on demand, one run at a time.

Runs execute inside this replica as owned asyncio tasks: partitions in parallel (bounded), embeddings
through the Embedder deployment's handle (so consolidation drives the Embedder's autoscaling) and
vectors through the Retriever, the embedded engine's owner, or the Qdrant server. The same work is available
as a Ray job (``python -m jobs.consolidate``) that fans partitions out as Ray tasks across a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from core.consolidation.runner import run_consolidation
from core.consolidation.runs import RunStore
from core.errors import Conflict, HybridMemError, InvalidInput, NotFound
from core.resources import postgres_pool
from core.settings import load_settings
from deployments.context import vector_index_for
from deployments.embedder import HandleEmbedder
from deployments.metrics_backend import init_observability

log = logging.getLogger(__name__)

# Triggers of the runs this deployment starts (the API's and its own schedule); jobs use others.
SCHEDULER_TRIGGERS = ("api", "schedule")


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
class ConsolidationScheduler:
    """Single replica: the run lock here plus per-partition advisory locks in Postgres."""

    async def __init__(  # type: ignore[misc]
        self,
        settings: dict[str, Any] | None,
        embedder: DeploymentHandle[Any],
        engine_owner: DeploymentHandle[Any] | None = None,
    ) -> None:
        self._settings = load_settings(settings)
        init_observability(self._settings)
        self._stack = contextlib.AsyncExitStack()
        pool = await postgres_pool(self._settings)
        self._stack.push_async_callback(pool.close)
        self._runs = RunStore(pool)
        self._vectors = await self._stack.enter_async_context(vector_index_for(self._settings, engine_owner))
        self._embedder = HandleEmbedder(embedder)
        self._current: tuple[uuid.UUID, asyncio.Task[Any]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spawn(self._resume_orphans())
        if self._settings.consolidation.enabled:
            self._spawn(self._every_interval())

    async def _resume_orphans(self) -> None:
        """Runs this deployment started (``api``, ``schedule``) that are still "running" lost their
        replica (this one is the only one): resume each, in turn, under its own id, so a client waiting
        on it sees it finish. Partitions done before are cheap to redo (their checkpoints hold)."""
        try:
            orphans = [r for r in await self._runs.running() if r.trigger in SCHEDULER_TRIGGERS]
        except HybridMemError:
            log.exception("could not look for consolidation runs left running")
            return
        for rec in orphans:
            log.warning("resuming consolidation run %s, left running by a replica that stopped", rec.id)
            if self._current is not None:  # a scheduled run began first: let it end
                await asyncio.gather(self._current[1], return_exceptions=True)
            try:
                await self.submit(list(rec.partitions) or None, None, rec.trigger, run_id=rec.id)
            except HybridMemError:
                log.exception("consolidation run %s could not be resumed", rec.id)
                continue
            if self._current is not None:
                await asyncio.gather(self._current[1], return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _every_interval(self) -> None:
        interval = self._settings.consolidation.interval_s
        while True:
            await asyncio.sleep(interval)
            if self._current is None:
                try:
                    await self.submit(None, None, "schedule")
                except Exception:  # the loop must outlive one bad run; the run record holds the error
                    log.exception("scheduled consolidation could not start")

    async def submit(
        self,
        partitions: list[int] | None,
        parallelism: int | None,
        trigger: str = "api",
        *,
        run_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """Start a run now (``run_id``: resume that run); refuses (Conflict) while another run of this
        app is in progress."""
        if self._current is not None:
            raise Conflict(f"consolidation run {self._current[0]} is still running")
        n = self._settings.consolidation.n_partitions
        if partitions is not None:
            bad = sorted({p for p in partitions if not 0 <= p < n})
            if bad:
                raise InvalidInput("partitions", f"{bad} outside 0..{n - 1}")
        run_id = run_id or uuid.uuid4()

        async def execute() -> None:
            try:
                await run_consolidation(
                    self._settings,
                    partitions=partitions,
                    parallelism=parallelism,
                    trigger=trigger,
                    run_id=run_id,
                    vectors=self._vectors,
                    embedder=self._embedder,
                )
            except Exception as exc:  # record it on the run: a run must never stay "running" forever
                log.exception("consolidation run %s failed", run_id)
                with contextlib.suppress(HybridMemError):
                    await self._runs.add_error(run_id, partition=None, error=f"{type(exc).__name__}: {exc}")
                    await self._runs.finish(run_id, status="failed")
            finally:
                self._current = None

        self._current = (run_id, self._spawn(execute()))
        # The run record is written by the run itself; wait briefly so a GET right after finds it.
        for _ in range(50):
            with contextlib.suppress(NotFound):
                rec = await self._runs.get(run_id)
                return rec.model_dump(mode="json")
            await asyncio.sleep(0.1)
        return {"id": str(run_id), "status": "starting"}

    async def current(self) -> str | None:
        return None if self._current is None else str(self._current[0])

    async def __del__(self) -> None:
        # Serve's replica shutdown hook: stop owned tasks, then close what this replica opened.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()
