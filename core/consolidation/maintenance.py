"""Maintenance passes beside consolidation: retention (archive old episodes, drop idle buffers) and
re-embedding into a new model version's collection.

Retention archives only *consolidated* episodes (their long-term form, the summaries, stays searchable);
an unconsolidated one waits for the next consolidation. Re-embedding writes the new collection without
touching the live alias and switches the alias once, at the end, so queries keep working throughout.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote

import asyncpg
import redis.asyncio as aioredis

from core import metrics
from core.consolidation.partition import summary_point
from core.consolidation.queries import _EPISODE_COLS, session_context
from core.consolidation.terms import session_terms
from core.embedding.types import TextEmbedder
from core.models import Episode, ModelVersion, SparseVector, VectorPoint
from core.points import chunk_points_of, episode_chunks, episode_point, episode_point_ids
from core.ports import EpisodicStore, VectorIndex
from core.retrieval.bm25_sparse import Bm25Sparse
from core.stores.postgres_rows import episode_from_row, memory_columns, memory_from_row
from core.stores.redis_working import RedisWorkingStore, encode_component

log = logging.getLogger(__name__)

_ARCHIVE_COLS = _EPISODE_COLS + ", consolidation_run_id, transcript_id, ingested_at, tsv, ctx_tsv"


@dataclass
class ArchiveReport:
    episodes: int = 0
    tenants: int = 0
    vectors_removed: int = 0
    dry_run: bool = False


async def archive_episodes(
    pool: asyncpg.Pool,
    vectors: VectorIndex | None,
    *,
    older_than: datetime,
    version: ModelVersion | None,
    keep_vectors: bool = False,
    dry_run: bool = False,
    batch_size: int = 1000,
    timeout_s: float = 60.0,
) -> ArchiveReport:
    """Move consolidated episodes created before ``older_than`` into ``episodes_archive`` in batches.

    Unless ``keep_vectors``, each batch's episode points (of ``version``) are deleted before the batch
    commits, so a failed delete rolls the batch back; summaries are kept.
    """
    report = ArchiveReport(dry_run=dry_run)
    if dry_run:
        row = await pool.fetchrow(
            """SELECT count(*) AS n, count(DISTINCT tenant_id) AS t FROM episodes
               WHERE created_at < $1 AND consolidated_at IS NOT NULL""",
            older_than, timeout=timeout_s,
        )  # fmt: skip
        report.episodes, report.tenants = int(row["n"]), int(row["t"])
        return report
    tenants: set[str] = set()
    while True:
        async with pool.acquire(timeout=timeout_s) as conn, conn.transaction():
            rows = await conn.fetch(
                f"""WITH moved AS (
                        DELETE FROM episodes WHERE id IN (
                            SELECT id FROM episodes WHERE created_at < $1 AND consolidated_at IS NOT NULL
                            ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                        RETURNING {_ARCHIVE_COLS})
                    INSERT INTO episodes_archive ({_ARCHIVE_COLS}, archived_at)
                    SELECT {_ARCHIVE_COLS}, now() FROM moved
                    RETURNING id, tenant_id, content""",
                older_than, batch_size, timeout=timeout_s,
            )  # fmt: skip
            if not rows:
                break
            if not keep_vectors and vectors is not None and version is not None:
                ids = [
                    pid
                    for r in rows
                    for pid in episode_point_ids(r["tenant_id"], str(r["id"]), r["content"], version)
                ]
                await vectors.delete_ids(ids)
                report.vectors_removed += len(ids)
                metrics.METRICS.retention_actions_total.inc(len(ids), action="deleted", record_type="vector")
        report.episodes += len(rows)
        metrics.METRICS.retention_actions_total.inc(len(rows), action="archived", record_type="episode")
        tenants.update(r["tenant_id"] for r in rows)
        if len(rows) < batch_size:
            break
    report.tenants = len(tenants)
    return report


@dataclass
class IdleReport:
    sessions: int = 0
    drained: int = 0
    dry_run: bool = False
    keys: list[str] = field(default_factory=list)


async def drop_idle_buffers(
    client: aioredis.Redis,
    working: RedisWorkingStore,
    episodic: EpisodicStore,
    *,
    prefix: str,
    idle_s: float,
    dry_run: bool = False,
    max_len: int = 200,
) -> IdleReport:
    """Drop session buffers with no write for ``idle_s``; each is first copied into Postgres (insert or
    skip by id), so nothing durable is lost with it."""
    report = IdleReport(dry_run=dry_run)
    cutoff = time.time() - idle_s
    async for raw_key in client.scan_iter(match=f"{prefix}:t:*:sessions", count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        tenant_enc = key[len(prefix) + 3 : -len(":sessions")]

        tenant_id = unquote(tenant_enc)
        idle = [
            s.decode() if isinstance(s, bytes) else str(s)
            for s in await client.zrangebyscore(key, "-inf", cutoff)
        ]
        for session_id in idle:
            report.sessions += 1
            report.keys.append(working.session_key(tenant_id, session_id))
            if dry_run:
                continue
            buffered = await working.recent_session(tenant_id=tenant_id, session_id=session_id, limit=max_len)
            if buffered:
                report.drained += len(await episodic.insert_episodes(buffered))
            await working.delete_session(tenant_id=tenant_id, session_id=session_id)
            metrics.METRICS.retention_actions_total.inc(action="expired", record_type="session_buffer")
            member = f"{encode_component(tenant_id)}:{encode_component(session_id)}"
            for p in {ep.partition for ep in buffered}:
                await client.zrem(f"{prefix}:p:{p}:sessions", member)
    return report


# ---- re-embedding ---------------------------------------------------------------------------------


@dataclass
class ReembedResult:
    partition: int
    episodes: int = 0
    summaries: int = 0
    seconds: float = 0.0


async def reembed_partition(
    pool: asyncpg.Pool,
    vectors: VectorIndex,
    embedder: TextEmbedder,
    partition: int,
    *,
    collection: str,
    batch_size: int = 256,
    timeout_s: float = 60.0,
    chunk_long_texts: bool = True,
    lexical: Bm25Sparse | None = None,
    window: int = 2,
) -> ReembedResult:
    """Embed every consolidated episode of ``partition`` (its chunks too, as consolidation does, and the
    summaries of its sessions) with ``embedder`` into ``collection``; points keep their deterministic
    ids, so a rerun overwrites. With ``lexical``, points carry BM25 vectors, neighbours folded in as
    consolidation folds them (``window`` turns each side)."""
    started = time.perf_counter()
    result = ReembedResult(partition=partition)
    version = await embedder.model_version()
    cursor: tuple[datetime, uuid.UUID] | None = None
    while True:
        c_ts, c_id = cursor if cursor is not None else (None, None)
        rows = await pool.fetch(
            f"""SELECT {_EPISODE_COLS} FROM episodes
                WHERE partition = $1 AND consolidated_at IS NOT NULL
                  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
                ORDER BY created_at, id LIMIT $4""",
            partition, c_ts, c_id, batch_size, timeout=timeout_s,
        )  # fmt: skip
        if not rows:
            break
        eps = [episode_from_row(r) for r in rows]
        # Consolidation gave duplicates no point of their own; keep it that way.
        keys = [(e.tenant_id, e.session_id, e.content_hash) for e in eps]
        owners = await pool.fetch(
            """SELECT DISTINCT ON (k.t, k.s, k.h) e.id
               FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, s, h)
               JOIN episodes e ON e.tenant_id = k.t AND e.session_id = k.s AND e.content_hash = k.h
               WHERE e.consolidated_at IS NOT NULL
               ORDER BY k.t, k.s, k.h, e.created_at, e.id""",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], timeout=timeout_s,
        )  # fmt: skip
        owner_ids = {r["id"] for r in owners}
        canon = [e for e in eps if e.id in owner_ids]
        if canon:
            chunks = [episode_chunks(e.content) if chunk_long_texts else [] for e in canon]
            embedded = await embedder.embed([e.content for e in canon] + [c for cs in chunks for c in cs])
            vecs = embedded.vectors
            terms = await _episode_terms(pool, canon, lexical, window=window, timeout_s=timeout_s)
            points = [
                episode_point(e, v, version, terms=terms.get(e.id)) for e, v in zip(canon, vecs, strict=False)
            ]
            points += chunk_points_of(canon, chunks, vecs[len(canon) :], version)
            await vectors.upsert(points, collection=collection)
        result.episodes += len(canon)
        cursor = (eps[-1].created_at, eps[-1].id)
        if len(rows) < batch_size:
            break
    result.summaries = await _reembed_summaries(
        pool, vectors, embedder, partition, version=version, collection=collection, timeout_s=timeout_s,
        lexical=lexical,
    )  # fmt: skip
    result.seconds = time.perf_counter() - started
    return result


async def _episode_terms(
    pool: asyncpg.Pool,
    episodes: Sequence[Episode],
    lexical: Bm25Sparse | None,
    *,
    window: int,
    timeout_s: float,
) -> dict[uuid.UUID, SparseVector | None]:
    """The episodes' BM25 vectors with their session neighbours folded in ({} without an encoder)."""
    if lexical is None or not episodes:
        return {}
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for e in episodes:
        lo, hi = spans.get((e.tenant_id, e.session_id), (e.created_at, e.created_at))
        spans[(e.tenant_id, e.session_id)] = (min(lo, e.created_at), max(hi, e.created_at))
    async with pool.acquire(timeout=timeout_s) as conn:
        context = await session_context(
            conn, [(t, s, lo, hi + timedelta(microseconds=1)) for (t, s), (lo, hi) in spans.items()],
            before=window, after=window, timeout_s=timeout_s,
        )  # fmt: skip
    targets = {e.id for e in episodes}
    return session_terms(list(context.values()), targets, encoder=lexical, window=window).own


async def _reembed_summaries(
    pool: asyncpg.Pool,
    vectors: VectorIndex,
    embedder: TextEmbedder,
    partition: int,
    *,
    version: ModelVersion,
    collection: str,
    timeout_s: float,
    lexical: Bm25Sparse | None = None,
) -> int:
    rows = await pool.fetch(
        f"""SELECT {memory_columns("m.")}
           FROM memory_records m
           WHERE m.kind = 'summary' AND EXISTS (
               SELECT 1 FROM episodes e WHERE e.tenant_id = m.tenant_id AND e.session_id = m.session_id
                 AND e.partition = $1)""",
        partition, timeout=timeout_s,
    )  # fmt: skip
    records = [memory_from_row(r) for r in rows]
    points: list[VectorPoint] = []
    for i in range(0, len(records), 256):
        chunk = records[i : i + 256]
        embedded = await embedder.embed([m.content for m in chunk])
        points += [
            summary_point(m, v, version, terms=lexical.document(m.content) if lexical else None)
            for m, v in zip(chunk, embedded.vectors, strict=True)
        ]
    if points:
        await vectors.upsert(points, collection=collection)
    return len(points)
