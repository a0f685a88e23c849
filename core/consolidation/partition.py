"""One partition's consolidation: the unit of work a Ray task (or an in-process runner) executes.

Steps, all under a Postgres advisory lock held on a dedicated connection (a second run skips the
partition instead of waiting):

1. drain the Redis session buffers of the partition's sessions into Postgres (insert-or-skip by id);
2. select unconsolidated episodes after the partition checkpoint in (created_at, id) batches, then the
   late arrivals at or before it (client-dated or drained episodes);
3. dedupe by (tenant, session, content hash): one point per distinct content, the first one wins;
4. summarise each touched session window; embed the episodes (each turn alone: neighbour text hurts the
   dense side, see core.retrieval.quality) and the summaries;
5. upsert Qdrant with deterministic ids (a replay overwrites), drop points of duplicates;
6. in ONE transaction: mark the batch consolidated, write summary records, refresh the neighbour-context
   full-text column (``ctx_tsv``) around the batch, advance the checkpoint, add the run's counts.

Exactly-once effect: a crash anywhere before step 6 leaves the batch unmarked, so the next run redoes it
and overwrites the same points; after step 6 nothing is redone. ``fault`` is the seam tests use to crash
at the named steps in :data:`FAULT_POINTS`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import asyncpg

from core.consolidation import queries
from core.consolidation.calls import calling
from core.consolidation.queries import ContextTurn, Cursor
from core.consolidation.runs import add_partition_counts
from core.consolidation.summarise import Summariser, SummaryTurn
from core.consolidation.terms import SessionTerms, session_terms
from core.embedding.types import EmbedResult, TextEmbedder, merge_results
from core.ids import deterministic_id
from core.models import Episode, MemoryRecord, ModelVersion, SparseVector, VectorPoint
from core.points import (
    Currency,
    chunk_points_of,
    episode_chunks,
    episode_point,
    episode_point_ids,
    payload,
    point_id,
)
from core.ports import EpisodicStore, VectorIndex
from core.retrieval.bm25_sparse import Bm25Sparse
from core.retrieval.repeats import sentence_keys
from core.settings import ConsolidationSettings

log = logging.getLogger(__name__)

FaultHook = Callable[[str], None]
FAULT_POINTS = ("after_drain", "after_select", "after_embed", "after_upsert", "before_commit", "after_commit")
MIN_SUMMARY_TURNS = 2
DRAIN_CHUNK = 1000


class DrainableBuffers(Protocol):
    """The part of the working store consolidation drains (RedisWorkingStore implements it)."""

    async def sessions_in_partition(self, partition: int) -> list[tuple[str, str]]: ...

    async def recent_session(self, *, tenant_id: str, session_id: str, limit: int) -> list[Episode]: ...


@dataclass(frozen=True)
class PartitionStores:
    """Ready clients one partition needs; borrowed, never closed here."""

    pool: asyncpg.Pool
    episodic: EpisodicStore
    embedder: TextEmbedder
    vectors: VectorIndex
    summariser: Summariser
    buffers: DrainableBuffers | None = None
    # BM25 term vectors written with each point (lexical search in the engine); None: dense only.
    lexical: Bm25Sparse | None = None


@dataclass
class PartitionResult:
    partition: int
    status: Literal["done", "locked", "failed"] = "done"
    drained: int = 0
    episodes: int = 0
    duplicates: int = 0
    summaries: int = 0
    batches: int = 0
    points: int = 0
    embedded_texts: int = 0
    seconds: float = 0.0
    error: str | None = None
    embed_seconds: float = field(default=0.0, repr=False)


ProgressHook = Callable[[PartitionResult], None]


def _window_start(ts: datetime, window_s: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, tz=UTC)


def summary_id(tenant_id: str, session_id: str, window_start: datetime) -> uuid.UUID:
    """Deterministic id of a session window's summary: a re-summary overwrites the same row and point."""
    return deterministic_id(tenant_id, "summary", f"{session_id}\x1f{int(window_start.timestamp())}")


def summary_point(
    record: MemoryRecord, vector: Sequence[float], version: ModelVersion, *, terms: SparseVector | None = None
) -> VectorPoint:
    return VectorPoint(
        id=point_id(record.tenant_id, "summary", str(record.id), version),
        sparse=terms,
        vector=list(vector),
        payload=payload(
            tenant_id=record.tenant_id, record_type="summary", record_id=str(record.id),
            agent_id=record.agent_id, session_id=record.session_id, kind=record.kind, content=record.content,
            created_at=record.created_at, source_ids=[str(record.id), *record.source_ids], version=version,
            metadata=record.metadata, currency=Currency.of(record),
        ),
    )  # fmt: skip


async def drain_buffers(
    buffers: DrainableBuffers, episodic: EpisodicStore, partition: int, *, max_len: int
) -> int:
    """Copy every buffered episode of the partition into Postgres; returns how many were new there."""
    pending: list[Episode] = []
    inserted = 0
    for tenant_id, session_id in await buffers.sessions_in_partition(partition):
        buffered = await buffers.recent_session(tenant_id=tenant_id, session_id=session_id, limit=max_len)
        pending.extend(ep for ep in buffered if ep.partition == partition)
        if len(pending) >= DRAIN_CHUNK:
            inserted += len(await episodic.insert_episodes(pending))
            pending = []
    if pending:
        inserted += len(await episodic.insert_episodes(pending))
    return inserted


class _PartitionRun:
    """State of one partition's pass; every SQL statement goes through the lock-holding connection."""

    def __init__(
        self,
        partition: int,
        conn: asyncpg.Connection,
        *,
        run_id: uuid.UUID,
        stores: PartitionStores,
        settings: ConsolidationSettings,
        context_window: int,
        timeout_s: float,
        fault: FaultHook,
        result: PartitionResult,
        progress: ProgressHook | None,
    ) -> None:
        self.partition = partition
        self.conn = conn
        self.run_id = run_id
        self.stores = stores
        self.settings = settings
        self.window = context_window
        self.timeout_s = timeout_s
        self.fault = fault
        self.result = result
        self.progress = progress
        self._version: ModelVersion | None = None
        self.collection: str | None = None

    @property
    def version(self) -> ModelVersion:
        if self._version is None:
            raise RuntimeError("prepare_collection() must run first")
        return self._version

    async def prepare_collection(self) -> None:
        """Write into this embedder's version's collection; make it live only when nothing else is."""
        self._version = version = await self.stores.embedder.model_version()
        live = await self.stores.vectors.live_version()
        make_live = live is None or live == version.key
        self.collection = await self.stores.vectors.ensure_collection(version, make_live=make_live)

    async def run_phase(self, *, after: Cursor | None, upto: Cursor | None, advance: bool) -> None:
        cursor = after
        while True:
            with calling("selecting a batch of episodes (Postgres)"):
                batch = await queries.select_batch(
                    self.conn, self.partition, after=cursor, upto=upto,
                    limit=self.settings.batch_size, timeout_s=self.timeout_s,
                )  # fmt: skip
            if not batch:
                return
            self.fault("after_select")
            last = (batch[-1].created_at, batch[-1].id)
            await self.process(batch, checkpoint=last if advance else None)
            cursor = last
            if len(batch) < self.settings.batch_size:
                return

    async def process(self, batch: list[Episode], *, checkpoint: Cursor | None) -> None:
        with calling("looking up consolidated twins (Postgres)"):
            canon, dups = await self._dedupe(batch)
        spans = self._spans(canon)
        # Twice the window: the turns next to the batch get their vectors rewritten, with their own
        # neighbours folded in (core.consolidation.terms).
        reach = 2 * self.window if self.stores.lexical is not None else self.window
        with calling("reading the batch's neighbour turns (Postgres)"):
            context = await queries.session_context(
                self.conn, spans, before=reach, after=reach, timeout_s=self.timeout_s
            )
        with calling("summarising session windows (summariser)"):
            summaries = await self._summaries(canon, context)
        chunks = [episode_chunks(ep.content) if self.settings.chunk_long_texts else [] for ep in canon]
        texts = (
            [ep.content for ep in canon] + [m.content for m in summaries] + [c for cs in chunks for c in cs]
        )
        t0 = time.perf_counter()
        with calling(f"embedding {len(texts)} texts (Embedder)"):
            embedded = await embed_in_slices(self.stores.embedder, texts, size=self.settings.embed_slice)
        self.result.embed_seconds += time.perf_counter() - t0
        self.fault("after_embed")
        points: list[VectorPoint] = []
        lexical = self.stores.lexical
        terms = session_terms(
            list(context.values()), {ep.id for ep in canon}, encoder=lexical, window=self.window
        ) if lexical is not None else None  # fmt: skip
        if embedded is not None:
            if embedded.version.key != self.version.key:
                raise RuntimeError(f"embedder changed version mid-run: {embedded.version.key}")
            vecs = embedded.vectors
            at = len(canon) + len(summaries)
            points = [
                episode_point(ep, v, self.version, terms=self._own_terms(ep, terms))
                for ep, v in zip(canon, vecs, strict=False)
            ]
            svecs = vecs[len(canon) : at]
            points += [
                summary_point(m, v, self.version, terms=lexical.document(m.content) if lexical else None)
                for m, v in zip(summaries, svecs, strict=True)
            ]
            points += chunk_points_of(canon, chunks, vecs[at:], self.version)
        if dups:
            # A duplicate may own points from an earlier, interrupted pass where it was the first copy.
            stale = [
                pid
                for ep in dups
                for pid in episode_point_ids(ep.tenant_id, str(ep.id), ep.content, self.version)
            ]
            with calling(f"deleting {len(stale)} points of duplicates (vector index)"):
                await self.stores.vectors.delete_ids(stale, collection=self.collection)
        with calling(f"upserting {len(points)} points (vector index)"):
            await self.stores.vectors.upsert(points, collection=self.collection)
        if terms is not None and terms.changed:
            # Earlier turns next to this batch: their neighbourhood now holds the batch's turns.
            turns = {t.id: t for ts in context.values() for t in ts}
            changed = {
                point_id(turns[tid].tenant_id, "episode", str(tid), self.version): vector
                for tid, vector in terms.changed.items()
                if vector is not None
            }
            with calling(f"rewriting {len(changed)} neighbours' BM25 vectors (vector index)"):
                await self.stores.vectors.update_terms(changed, collection=self.collection)
        self.fault("after_upsert")
        self.fault("before_commit")
        with calling("committing the batch (Postgres)"):
            marked = await self._commit(batch, dups, summaries, context, checkpoint)
        self.fault("after_commit")
        r = self.result
        r.episodes += marked
        r.duplicates += len(dups)
        r.summaries += len(summaries)
        r.batches += 1
        r.points += len(points)
        r.embedded_texts += len(texts)
        if self.progress is not None:
            self.progress(r)

    async def _commit(
        self,
        batch: list[Episode],
        dups: list[Episode],
        summaries: list[MemoryRecord],
        context: dict[tuple[str, str], list[ContextTurn]],
        checkpoint: Cursor | None,
    ) -> int:
        """Step 6, one transaction: mark the batch, write summaries, refresh context, advance, count."""
        async with self.conn.transaction():
            marked: int = await queries.commit_batch(
                self.conn, partition=self.partition, run_id=self.run_id, episode_ids=[e.id for e in batch],
                summaries=summaries, checkpoint=checkpoint, timeout_s=self.timeout_s,
                context_ids=[t.id for turns in context.values() for t in turns],
                context_sessions=list(context), context_window=self.window,
            )  # fmt: skip
            await add_partition_counts(
                self.conn, self.run_id, self.partition, timeout_s=self.timeout_s,
                episodes=marked, duplicates=len(dups), summaries=len(summaries), batches=1,
            )  # fmt: skip
        return marked

    def _own_terms(self, episode: Episode, terms: SessionTerms | None) -> SparseVector | None:
        if terms is None or self.stores.lexical is None:
            return None
        if episode.id in terms.own:
            return terms.own[episode.id]
        return self.stores.lexical.document(episode.content)  # not in its session's context: alone

    async def _dedupe(self, batch: list[Episode]) -> tuple[list[Episode], list[Episode]]:
        """First copy of each (tenant, session, content hash) not consolidated before; the rest are dups."""
        keys = list(dict.fromkeys((e.tenant_id, e.session_id, e.content_hash) for e in batch))
        seen = await queries.consolidated_twins(self.conn, keys, timeout_s=self.timeout_s)
        canon: list[Episode] = []
        dups: list[Episode] = []
        for ep in batch:
            key = (ep.tenant_id, ep.session_id, ep.content_hash)
            if key in seen:
                dups.append(ep)
            else:
                seen.add(key)
                canon.append(ep)
        return canon, dups

    def _spans(self, episodes: list[Episode]) -> list[tuple[str, str, datetime, datetime]]:
        """Per session: from the first touched window's start to the last touched window's end."""
        bounds: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        w = self.settings.summary_window_s
        for ep in episodes:
            lo = _window_start(ep.created_at, w)
            hi = lo + timedelta(seconds=w)
            key = (ep.tenant_id, ep.session_id)
            cur = bounds.get(key)
            bounds[key] = (lo, hi) if cur is None else (min(cur[0], lo), max(cur[1], hi))
        return [(t, s, lo, hi) for (t, s), (lo, hi) in bounds.items()]

    async def _summaries(
        self, canon: list[Episode], context: dict[tuple[str, str], list[ContextTurn]]
    ) -> list[MemoryRecord]:
        w = self.settings.summary_window_s
        touched = dict.fromkeys((e.tenant_id, e.session_id, _window_start(e.created_at, w)) for e in canon)
        now = datetime.now(UTC)
        out: list[MemoryRecord] = []
        for tenant_id, session_id, start in touched:
            end = start + timedelta(seconds=w)
            window = [t for t in context.get((tenant_id, session_id), []) if start <= t.created_at < end]
            turns = [t for t in window if not t.superseded]  # what a successor replaced is not summarised
            distinct = list({t.content_hash: t for t in turns}.values())
            if len(distinct) < MIN_SUMMARY_TURNS:
                continue
            text = await self.stores.summariser.summarise(
                [SummaryTurn(t.speaker, t.content) for t in distinct]
            )
            if not text:
                continue
            # Whether the summary copies its turns' sentences (the extractive summariser) or paraphrases
            # them (an LLM's): context packing weighs a paraphrase against its turns by source ids.
            said = set().union(*(sentence_keys(t.content) for t in distinct))
            own = sentence_keys(text)
            shared = len(own & said)
            out.append(
                MemoryRecord(
                    id=summary_id(tenant_id, session_id, start),
                    tenant_id=tenant_id,
                    agent_id=distinct[0].agent_id,
                    session_id=session_id,
                    kind="summary",
                    content=text,
                    metadata={
                        "window_start": start.isoformat(),
                        "window_end": end.isoformat(),
                        "turns": len(turns),
                        "extractive": shared > 0 and shared >= len(own) - 1,  # the last may be cut
                    },
                    source_ids=[str(t.id) for t in turns],
                    model_version=self.version.key,
                    created_at=distinct[0].created_at,
                    updated_at=now,
                )
            )
        return out


async def embed_in_slices(embedder: TextEmbedder, texts: Sequence[str], *, size: int) -> EmbedResult | None:
    """``texts`` embedded ``size`` at a time (None for none): each call stays well inside its timeout
    however large the batch, and queries reach the Embedder between the calls."""
    parts = [await embedder.embed(texts[i : i + size]) for i in range(0, len(texts), size)]
    if not parts:
        return None
    if len({p.version.key for p in parts}) > 1:
        raise RuntimeError("embedder changed version mid-batch")
    return merge_results(parts, parts[0].version)


def _no_fault(_step: str) -> None:
    return None


async def consolidate_partition(
    partition: int,
    *,
    run_id: uuid.UUID,
    stores: PartitionStores,
    settings: ConsolidationSettings,
    context_window: int = 2,
    buffer_max_len: int = 200,
    timeout_s: float = 30.0,
    fault: FaultHook | None = None,
    progress: ProgressHook | None = None,
) -> PartitionResult:
    """Consolidate one partition; ``status="locked"`` when another run holds it. Errors propagate."""
    started = time.perf_counter()
    result = PartitionResult(partition=partition)
    with calling("acquiring a Postgres connection"):
        conn: asyncpg.Connection = await stores.pool.acquire(timeout=timeout_s)
    try:
        with calling("taking the partition's lock (Postgres)"):
            locked = await queries.try_lock(conn, partition, timeout_s=timeout_s)
        if not locked:
            result.status = "locked"
            log.info("partition %d is locked by another run; skipped", partition)
            return result
        try:
            await add_partition_counts(conn, run_id, partition, status="running", timeout_s=timeout_s)
            step = fault or _no_fault
            if stores.buffers is not None:
                with calling("draining the session buffers (Redis to Postgres)"):
                    result.drained = await drain_buffers(
                        stores.buffers, stores.episodic, partition, max_len=buffer_max_len
                    )
                await add_partition_counts(
                    conn, run_id, partition, timeout_s=timeout_s, drained=result.drained
                )
            step("after_drain")
            work = _PartitionRun(
                partition, conn, run_id=run_id, stores=stores, settings=settings,
                context_window=context_window, timeout_s=timeout_s, fault=step, result=result,
                progress=progress,
            )  # fmt: skip
            with calling("preparing the collection (Embedder, vector index)"):
                await work.prepare_collection()
            with calling("reading the partition's checkpoint (Postgres)"):
                mark = await queries.read_checkpoint(conn, partition, timeout_s=timeout_s)
            await work.run_phase(after=mark, upto=None, advance=True)
            if mark is not None:
                await work.run_phase(after=None, upto=mark, advance=False)
            await add_partition_counts(conn, run_id, partition, status="done", timeout_s=timeout_s)
        finally:
            await queries.unlock(conn, partition, timeout_s=timeout_s)
    except BaseException:
        # The session-level lock must not outlive a failed pass: a dead connection drops it for sure.
        conn.terminate()
        raise
    finally:
        await stores.pool.release(conn)
        result.seconds = time.perf_counter() - started
    return result
