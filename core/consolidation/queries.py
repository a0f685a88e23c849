"""SQL of one partition's consolidation, on the caller's (lock-holding) asyncpg connection.

Kept apart from the control flow in :mod:`core.consolidation.partition` so each reads in one sitting.
Every statement is parameterised and bounded by the caller's timeout.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.ids import content_hash
from core.models import Episode, MemoryRecord
from core.stores.postgres_rows import episode_columns, episode_from_row

# Namespace of our advisory locks: pg_try_advisory_lock(LOCK_CLASS, partition) ("hm" + 1).
LOCK_CLASS = 0x686D0001

_EPISODE_COLS = episode_columns()

Cursor = tuple[datetime, uuid.UUID]


@dataclass(frozen=True, slots=True)
class ContextTurn:
    """A turn around a batch episode: what neighbour windows and window summaries are built from."""

    id: uuid.UUID
    tenant_id: str
    session_id: str
    agent_id: str
    created_at: datetime
    content: str
    speaker: str
    content_hash: str
    superseded: bool = False


async def try_lock(conn: asyncpg.Connection, partition: int, *, timeout_s: float) -> bool:
    locked: bool = await conn.fetchval(
        "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, partition, timeout=timeout_s
    )
    return locked


async def unlock(conn: asyncpg.Connection, partition: int, *, timeout_s: float) -> None:
    await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, partition, timeout=timeout_s)


async def read_checkpoint(conn: asyncpg.Connection, partition: int, *, timeout_s: float) -> Cursor | None:
    row = await conn.fetchrow(
        "SELECT last_created_at, last_episode_id FROM consolidation_checkpoints WHERE partition = $1",
        partition, timeout=timeout_s,
    )  # fmt: skip
    if row is None or row["last_created_at"] is None:
        return None
    return (row["last_created_at"], row["last_episode_id"])


async def select_batch(
    conn: asyncpg.Connection,
    partition: int,
    *,
    after: Cursor | None,
    upto: Cursor | None,
    limit: int,
    timeout_s: float,
) -> list[Episode]:
    """Unconsolidated episodes of the partition with ``after < (created_at, id) <= upto``, in that order."""
    a_ts, a_id = after if after is not None else (None, None)
    u_ts, u_id = upto if upto is not None else (None, None)
    rows = await conn.fetch(
        f"""SELECT {_EPISODE_COLS} FROM episodes
            WHERE partition = $1 AND consolidated_at IS NULL
              AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
              AND ($4::timestamptz IS NULL OR (created_at, id) <= ($4::timestamptz, $5::uuid))
            ORDER BY created_at, id LIMIT $6""",
        partition, a_ts, a_id, u_ts, u_id, limit, timeout=timeout_s,
    )  # fmt: skip
    return [episode_from_row(r) for r in rows]


async def consolidated_twins(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str, str]], *, timeout_s: float
) -> set[tuple[str, str, str]]:
    """Which (tenant, session, content hash) keys already have a consolidated episode."""
    if not keys:
        return set()
    rows = await conn.fetch(
        """SELECT DISTINCT e.tenant_id, e.session_id, e.content_hash
           FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, s, h)
           JOIN episodes e ON e.tenant_id = k.t AND e.session_id = k.s AND e.content_hash = k.h
           WHERE e.consolidated_at IS NOT NULL""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], timeout=timeout_s,
    )  # fmt: skip
    return {(r["tenant_id"], r["session_id"], r["content_hash"]) for r in rows}


async def session_context(
    conn: asyncpg.Connection,
    spans: Sequence[tuple[str, str, datetime, datetime]],
    *,
    before: int,
    after: int,
    timeout_s: float,
) -> dict[tuple[str, str], list[ContextTurn]]:
    """Per (tenant, session): every turn in [lo, hi) plus ``before``/``after`` turns outside it, in order."""
    if not spans:
        return {}
    cols = (
        "e.id, e.tenant_id, e.session_id, e.agent_id, e.created_at, e.content, e.content_hash, e.metadata, "
        "e.superseded_at"
    )
    rows = await conn.fetch(
        f"""SELECT x.* FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
                 AS s(t, sid, lo, hi)
            CROSS JOIN LATERAL (
                (SELECT {cols} FROM episodes e WHERE e.tenant_id = s.t AND e.session_id = s.sid
                   AND e.created_at < s.lo ORDER BY e.created_at DESC, e.id DESC LIMIT $5)
                UNION ALL
                (SELECT {cols} FROM episodes e WHERE e.tenant_id = s.t AND e.session_id = s.sid
                   AND e.created_at >= s.lo AND e.created_at < s.hi)
                UNION ALL
                (SELECT {cols} FROM episodes e WHERE e.tenant_id = s.t AND e.session_id = s.sid
                   AND e.created_at >= s.hi ORDER BY e.created_at, e.id LIMIT $6)
            ) AS x""",
        [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans], [s[3] for s in spans],
        before, after, timeout=timeout_s,
    )  # fmt: skip
    out: dict[tuple[str, str], list[ContextTurn]] = {}
    for r in rows:
        meta = json.loads(r["metadata"]) if isinstance(r["metadata"], str) else (r["metadata"] or {})
        speaker = meta.get("speaker") if isinstance(meta, dict) else None
        turn = ContextTurn(
            id=r["id"], tenant_id=r["tenant_id"], session_id=r["session_id"], agent_id=r["agent_id"],
            created_at=r["created_at"], content=r["content"], speaker=str(speaker or ""),
            content_hash=r["content_hash"], superseded=r["superseded_at"] is not None,
        )  # fmt: skip
        out.setdefault((turn.tenant_id, turn.session_id), []).append(turn)
    for turns in out.values():
        turns.sort(key=lambda t: (t.created_at, t.id))
    return out


_UPSERT_SUMMARIES = """
INSERT INTO memory_records (id, tenant_id, agent_id, session_id, kind, content, metadata, source_ids,
                            model_version, content_hash, created_at, updated_at)
SELECT u.id, u.tenant_id, u.agent_id, u.session_id, u.kind, u.content, u.metadata::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(u.source_ids::jsonb)), u.model_version, u.content_hash,
       u.created_at, u.updated_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])
     AS u(id, tenant_id, agent_id, session_id, kind, content, metadata, source_ids, model_version,
          content_hash, created_at, updated_at)
ON CONFLICT (id) DO UPDATE SET
    content = EXCLUDED.content, metadata = EXCLUDED.metadata, source_ids = EXCLUDED.source_ids,
    model_version = EXCLUDED.model_version, content_hash = EXCLUDED.content_hash,
    updated_at = EXCLUDED.updated_at, superseded_by = NULL, superseded_at = NULL
WHERE memory_records.tenant_id = EXCLUDED.tenant_id
"""


async def commit_batch(
    conn: asyncpg.Connection,
    *,
    partition: int,
    run_id: uuid.UUID,
    episode_ids: Sequence[uuid.UUID],
    summaries: Sequence[MemoryRecord],
    checkpoint: Cursor | None,
    timeout_s: float,
    context_ids: Sequence[uuid.UUID] = (),
    context_sessions: Sequence[tuple[str, str]] = (),
    context_window: int = 2,
) -> int:
    """Mark episodes, write summaries, refresh ``ctx_tsv`` of the batch and its neighbours, advance the
    checkpoint (never backwards). The caller owns the transaction.

    Returns how many episodes this call marked (already-marked ones are left alone).
    """
    status: str = await conn.execute(
        """UPDATE episodes SET consolidated_at = now(), consolidation_run_id = $2
           WHERE id = ANY($1::uuid[]) AND partition = $3 AND consolidated_at IS NULL""",
        list(episode_ids), run_id, partition, timeout=timeout_s,
    )  # fmt: skip
    if summaries:
        cols: list[list[Any]] = [[] for _ in range(12)]
        for m in summaries:
            values = (
                m.id, m.tenant_id, m.agent_id, m.session_id, m.kind, m.content, json.dumps(m.metadata),
                json.dumps(m.source_ids), m.model_version, content_hash(m.content), m.created_at,
                m.updated_at,
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        await conn.execute(_UPSERT_SUMMARIES, *cols, timeout=timeout_s)
    if context_ids and context_sessions:
        await refresh_context_tsv(
            conn, context_sessions, context_ids, window=context_window, timeout_s=timeout_s
        )
    if checkpoint is not None:
        await conn.execute(
            """INSERT INTO consolidation_checkpoints (partition, last_created_at, last_episode_id, run_id)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (partition) DO UPDATE SET last_created_at = EXCLUDED.last_created_at,
                   last_episode_id = EXCLUDED.last_episode_id, run_id = EXCLUDED.run_id, updated_at = now()
               WHERE consolidation_checkpoints.last_created_at IS NULL
                  OR (consolidation_checkpoints.last_created_at, consolidation_checkpoints.last_episode_id)
                     < (EXCLUDED.last_created_at, EXCLUDED.last_episode_id)""",
            partition, checkpoint[0], checkpoint[1], run_id, timeout=timeout_s,
        )  # fmt: skip
    return int(status.split()[-1])


async def refresh_context_tsv(
    conn: asyncpg.Connection,
    sessions: Sequence[tuple[str, str]],
    ids: Sequence[uuid.UUID],
    *,
    window: int,
    timeout_s: float,
) -> None:
    """``ctx_tsv`` = own terms (weight A) || up to ``window`` neighbours' terms each side (weight B), as
    core.retrieval.bm25_postgres reads it; only the rows in ``ids`` (a batch and its neighbours) change."""
    near = [f"lag(e.content, {i}) OVER w" for i in range(window, 0, -1)]
    near += [f"lead(e.content, {i}) OVER w" for i in range(1, window + 1)]
    neighbours = f"concat_ws(' ', {', '.join(near)})" if near else "''"
    await conn.execute(
        f"""WITH s AS (SELECT * FROM unnest($1::text[], $2::text[]) AS s(t, sid)),
                 ctx AS (SELECT e.id, {neighbours} AS ntext
                         FROM s JOIN episodes e ON e.tenant_id = s.t AND e.session_id = s.sid
                         WINDOW w AS (PARTITION BY e.tenant_id, e.session_id ORDER BY e.created_at, e.id))
            UPDATE episodes e
            SET ctx_tsv = setweight(e.tsv, 'A')
                || setweight(to_tsvector('english'::regconfig, ctx.ntext), 'B')
            FROM ctx WHERE e.id = ctx.id AND e.id = ANY($3::uuid[])""",
        [s[0] for s in sessions], [s[1] for s in sessions], list(ids), timeout=timeout_s,
    )  # fmt: skip
