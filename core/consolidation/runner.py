"""In-process consolidation runs: partitions as asyncio tasks, at most ``parallelism`` at once.

:func:`run_consolidation` is what the scheduler, the admin API and tests call in-process; the Ray job
(``jobs.consolidate``) fans the same :func:`run_partition` out as one Ray task per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import httpx

from core import metrics
from core.consolidation.calls import CALL_NOTE
from core.consolidation.partition import (
    FaultHook,
    PartitionResult,
    PartitionStores,
    ProgressHook,
    consolidate_partition,
)
from core.consolidation.runs import RunRecord, RunStore
from core.consolidation.summarise import ExtractiveSummariser, OllamaSummariser, Summariser
from core.embedding.loader import load_embedder
from core.embedding.types import TextEmbedder
from core.errors import EmbeddingError, HybridMemError, ModelUnavailable, StoreUnavailable
from core.ports import VectorIndex
from core.resources import open_resources
from core.retrieval.bm25_sparse import bm25_sparse
from core.settings import Settings
from core.stores.vector_factory import open_vector_index

log = logging.getLogger(__name__)


def all_partitions(settings: Settings) -> list[int]:
    return list(range(settings.consolidation.n_partitions))


def parse_partitions(spec: str | None, settings: Settings) -> list[int]:
    """``"0,1,5-7"`` → [0, 1, 5, 6, 7]; None or ``"all"`` → every partition. Out of range: ValueError."""
    if spec is None or spec.strip() in ("", "all"):
        return all_partitions(settings)
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = int(lo), int(hi or lo)
        out.update(range(first, last + 1))
    n = settings.consolidation.n_partitions
    bad = sorted(p for p in out if not 0 <= p < n)
    if bad:
        raise ValueError(f"partitions {bad} are outside 0..{n - 1}")
    return sorted(out)


@contextlib.asynccontextmanager
async def open_summariser(settings: Settings) -> AsyncIterator[Summariser]:
    """The LLM summariser when ``consolidation.ollama_summary_url`` is set, else the extractive one."""
    c = settings.consolidation
    if not c.ollama_summary_url:
        yield ExtractiveSummariser()
        return
    async with httpx.AsyncClient() as client:
        yield OllamaSummariser(
            client, base_url=c.ollama_summary_url, model=c.ollama_summary_model,
            timeout_s=settings.embedding.ollama_timeout_s,
        )  # fmt: skip


@dataclass(frozen=True)
class PartitionOutcome:
    """What one partition task reports back (picklable for Ray)."""

    partition: int
    status: str
    episodes: int = 0
    duplicates: int = 0
    summaries: int = 0
    drained: int = 0
    points: int = 0
    embedded_texts: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    error: str | None = None


def _outcome(r: PartitionResult) -> PartitionOutcome:
    return PartitionOutcome(
        partition=r.partition, status=r.status, episodes=r.episodes, duplicates=r.duplicates,
        summaries=r.summaries, drained=r.drained, points=r.points, embedded_texts=r.embedded_texts,
        seconds=r.seconds, embed_seconds=r.embed_seconds, error=r.error,
    )  # fmt: skip


async def run_partition(
    partition: int,
    *,
    run_id: uuid.UUID,
    settings: Settings,
    stores: PartitionStores,
    runs: RunStore,
    fault: FaultHook | None = None,
    progress: ProgressHook | None = None,
) -> PartitionOutcome:
    """One partition with its bookkeeping: a failure is recorded on the run and reported, not raised.

    Slow is not failed: a pass that times out or loses a store is run again (``partition_retries`` times,
    after 2 s, 4 s, ...; a pass is idempotent), each retry counted on the run with its reason.
    """
    started = time.perf_counter()
    attempt = 0
    try:
        while True:
            try:
                result = await consolidate_partition(
                    partition, run_id=run_id, stores=stores, settings=settings.consolidation,
                    context_window=settings.retrieval.lexical_neighbour_window,
                    buffer_max_len=settings.redis.session_buffer_max_len,
                    timeout_s=max(settings.postgres.command_timeout_s, 30.0), fault=fault, progress=progress,
                )  # fmt: skip
                break
            except (TimeoutError, StoreUnavailable, EmbeddingError) as exc:
                if isinstance(exc, ModelUnavailable) or attempt >= settings.consolidation.partition_retries:
                    raise
                attempt += 1
                reason = _describe(exc, waited_s=time.perf_counter() - started)
                log.warning("partition %d: retrying after %s (retry %d)", partition, reason, attempt)
                with contextlib.suppress(HybridMemError):
                    await runs.note_retry(run_id, partition, reason=reason)
                await asyncio.sleep(2.0**attempt)
    except (
        HybridMemError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, RuntimeError, ValueError,
        TimeoutError,
    ) as exc:  # fmt: skip
        error = _describe(exc, waited_s=time.perf_counter() - started)
        log.exception("partition %d failed", partition)
        metrics.METRICS.consolidation_failures_total.inc(stage=metrics.failure_stage(exc))
        metrics.observe_partition("failed", time.perf_counter() - started)
        with contextlib.suppress(HybridMemError):
            await runs.add_error(run_id, partition=partition, error=error)
            await runs.set_partition(run_id, partition, status="failed")
        return PartitionOutcome(partition=partition, status="failed", error=error)
    if result.status == "locked":
        await runs.set_partition(run_id, partition, status="locked")
    metrics.observe_partition(
        result.status, result.seconds, episodes=result.episodes,
        counts={"episode": result.points - result.summaries, "summary": result.summaries},
    )  # fmt: skip
    return _outcome(result)


def _describe(exc: BaseException, *, waited_s: float) -> str:
    """The error for the run record: the exception, the call it came from and how long that call waited
    (the note core.consolidation.partition.calling adds), and how long the pass had run."""
    message = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "no message")
    text = f"{type(exc).__name__}: {message}"
    notes = [n for n in getattr(exc, "__notes__", ()) if n.startswith(CALL_NOTE)]
    if notes:
        text += f" ({notes[0]})"
    return text + f"; the pass had run {waited_s:.1f} s"


async def run_consolidation(
    settings: Settings,
    *,
    partitions: Sequence[int] | None = None,
    parallelism: int | None = None,
    trigger: str = "manual",
    run_id: uuid.UUID | None = None,
    progress: Callable[[PartitionOutcome], None] | None = None,
    vectors: VectorIndex | None = None,
    embedder: TextEmbedder | None = None,
    fault: FaultHook | None = None,
) -> RunRecord:
    """Run (or resume, with ``run_id``) consolidation of ``partitions`` in this process; returns the record.

    ``vectors``/``embedder`` default to the stores ``settings`` name (pass Serve-handle adapters when the
    app owns an embedded store). ``progress`` is called once per finished partition.
    """
    run_started = time.perf_counter()
    chosen = list(partitions) if partitions is not None else all_partitions(settings)
    width = max(1, parallelism or settings.consolidation.parallelism)
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        if vectors is None:
            vectors = await stack.enter_async_context(open_vector_index(settings))
        if embedder is None:
            embedder = await load_embedder(settings.embedding)
        summariser = await stack.enter_async_context(open_summariser(settings))
        runs = RunStore(res.pool)
        record = await runs.create(partitions=chosen, trigger=trigger, run_id=run_id)
        stores = PartitionStores(
            pool=res.pool, episodic=res.episodic, embedder=embedder, vectors=vectors,
            summariser=summariser, buffers=res.working, lexical=bm25_sparse(settings.retrieval),
        )  # fmt: skip
        gate = asyncio.Semaphore(width)

        async def one(partition: int) -> None:
            async with gate:
                outcome = await run_partition(
                    partition, run_id=record.id, settings=settings, stores=stores, runs=runs, fault=fault
                )
            if progress is not None:
                progress(outcome)

        async with asyncio.TaskGroup() as tg:
            for p in chosen:
                tg.create_task(one(p))
        finished = await runs.finish(record.id)
        metrics.observe_consolidation_run(finished.status, time.perf_counter() - run_started)
        with contextlib.suppress(HybridMemError, OSError, TimeoutError):
            await metrics.refresh_backlog(res.pool, chosen)
        return finished
