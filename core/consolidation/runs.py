"""Consolidation run records (table ``consolidation_runs``): start/end, per-partition counts, errors.

``counts`` is a JSON object keyed by partition number (as text): ``{"3": {"status": "done", "episodes":
120, "duplicates": 2, "summaries": 9, "drained": 4, "batches": 1}}``. Per-batch increments are written in
the same transaction that marks the batch's episodes consolidated (:func:`add_partition_counts` takes
the caller's connection), so the counts never disagree with what was committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from core.errors import NotFound, StoreUnavailable

RunStatus = Literal["running", "succeeded", "failed"]
PartitionStatus = Literal["running", "done", "locked", "failed"]
Trigger = Literal["manual", "schedule", "api", "cli", "test", "bench"]
COUNT_KEYS = ("episodes", "duplicates", "summaries", "drained", "batches", "retries")

_COLS = "id, status, partitions, started_at, finished_at, counts, errors, trigger"


class RunRecord(BaseModel):
    """One consolidation run as stored; ``counts`` per partition, ``errors`` as {partition, error}."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    status: str
    partitions: list[int]
    started_at: datetime
    finished_at: datetime | None = None
    counts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    trigger: str = "manual"

    def total(self, key: str) -> int:
        """Sum of one count over every partition (episodes, duplicates, summaries, drained, batches)."""
        return sum(int(c.get(key, 0)) for c in self.counts.values())

    def partition_status(self, partition: int) -> str | None:
        entry = self.counts.get(str(partition))
        return None if entry is None else str(entry.get("status"))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _record(row: asyncpg.Record) -> RunRecord:
    return RunRecord(
        id=row["id"], status=row["status"], partitions=list(row["partitions"]), started_at=row["started_at"],
        finished_at=row["finished_at"], counts=_json(row["counts"]) or {}, errors=_json(row["errors"]) or [],
        trigger=row["trigger"],
    )  # fmt: skip


async def add_partition_counts(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    partition: int,
    *,
    status: PartitionStatus | None = None,
    timeout_s: float = 10.0,
    **increments: int,
) -> None:
    """Add ``increments`` to the partition's counts (and set its status) on the caller's connection."""
    unknown = set(increments) - set(COUNT_KEYS)
    if unknown:
        raise ValueError(f"unknown count keys: {sorted(unknown)}")
    await conn.execute(
        """UPDATE consolidation_runs SET counts = jsonb_set(counts, ARRAY[$2::text],
               COALESCE(counts -> $2::text, '{}'::jsonb)
               || COALESCE((SELECT jsonb_object_agg(inc.key,
                                       COALESCE((counts -> $2::text ->> inc.key)::bigint, 0)
                                       + inc.value::bigint)
                            FROM jsonb_each_text($3::text::jsonb) AS inc), '{}'::jsonb)
               || CASE WHEN $4::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('status', $4::text) END)
           WHERE id = $1""",
        run_id, str(partition), json.dumps(increments), status,
        timeout=timeout_s,
    )  # fmt: skip


class RunStore:
    """Create, update and read run records. Borrows the pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("postgres", type(exc).__name__) from exc

    async def create(
        self, *, partitions: Sequence[int], trigger: str, run_id: uuid.UUID | None = None
    ) -> RunRecord:
        """Start a run (status running); an existing ``run_id`` is resumed: set running again."""
        rid = run_id or uuid.uuid4()
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                row = await conn.fetchrow(
                    f"""INSERT INTO consolidation_runs (id, status, partitions, trigger)
                        VALUES ($1, 'running', $2::int[], $3)
                        ON CONFLICT (id) DO UPDATE SET status = 'running', finished_at = NULL,
                            partitions = ARRAY(SELECT DISTINCT p FROM unnest(
                                consolidation_runs.partitions || EXCLUDED.partitions) AS p ORDER BY p)
                        RETURNING {_COLS}""",
                    rid, sorted(set(partitions)), trigger,
                    timeout=self._timeout_s,
                )  # fmt: skip
        return _record(row)

    async def set_partition(
        self, run_id: uuid.UUID, partition: int, *, status: PartitionStatus, **inc: int
    ) -> None:
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                await add_partition_counts(
                    conn, run_id, partition, status=status, timeout_s=self._timeout_s, **inc
                )

    async def note_retry(self, run_id: uuid.UUID, partition: int, *, reason: str) -> None:
        """Count a retried pass of ``partition`` and keep why it was retried (``last_retry``)."""
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                await add_partition_counts(conn, run_id, partition, timeout_s=self._timeout_s, retries=1)
                await conn.execute(
                    """UPDATE consolidation_runs SET counts = jsonb_set(counts, ARRAY[$2::text],
                           counts -> $2::text || jsonb_build_object('last_retry', $3::text))
                       WHERE id = $1""",
                    run_id, str(partition), reason[:500], timeout=self._timeout_s,
                )  # fmt: skip

    async def add_error(self, run_id: uuid.UUID, *, partition: int | None, error: str) -> None:
        entry = json.dumps([{"partition": partition, "error": error[:2000]}])
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                await conn.execute(
                    "UPDATE consolidation_runs SET errors = errors || $2::text::jsonb WHERE id = $1",
                    run_id, entry, timeout=self._timeout_s,
                )  # fmt: skip

    async def finish(self, run_id: uuid.UUID, *, status: RunStatus | None = None) -> RunRecord:
        """Stamp the end; without ``status``: failed when any error was recorded, else succeeded."""
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                row = await conn.fetchrow(
                    f"""UPDATE consolidation_runs SET finished_at = now(),
                            status = COALESCE($2::text, CASE WHEN jsonb_array_length(errors) > 0
                                                             THEN 'failed' ELSE 'succeeded' END)
                        WHERE id = $1 RETURNING {_COLS}""",
                    run_id, status, timeout=self._timeout_s,
                )  # fmt: skip
        if row is None:
            raise NotFound("consolidation_run", str(run_id))
        return _record(row)

    async def get(self, run_id: uuid.UUID) -> RunRecord:
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                row = await conn.fetchrow(
                    f"SELECT {_COLS} FROM consolidation_runs WHERE id = $1", run_id, timeout=self._timeout_s
                )
        if row is None:
            raise NotFound("consolidation_run", str(run_id))
        return _record(row)

    async def recent(self, *, limit: int = 20, status: str | None = None) -> list[RunRecord]:
        """Newest first."""
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                rows = await conn.fetch(
                    f"""SELECT {_COLS} FROM consolidation_runs WHERE ($1::text IS NULL OR status = $1)
                        ORDER BY started_at DESC, id LIMIT $2""",
                    status, limit, timeout=self._timeout_s,
                )  # fmt: skip
        return [_record(r) for r in rows]

    async def running(self) -> list[RunRecord]:
        """Runs not finished yet (the scheduler starts none while one is running)."""
        return await self.recent(limit=100, status="running")
