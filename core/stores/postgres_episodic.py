"""Episodic tier on Postgres (asyncpg): durable episodes, transcripts and semantic-memory records.

Schema: core/migrations. Writes are batched (``INSERT ... SELECT FROM unnest(...)``), idempotent on the
deterministic row id, and run in one transaction. Every read and write is tenant-scoped and parameterised.
Full-text search uses the generated ``tsv`` columns (english config) ranked with ``ts_rank_cd``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import asyncpg

from core.errors import InvalidInput, StoreUnavailable
from core.ids import content_hash
from core.models import Episode, MemoryRecord, MemoryVersion, Transcript, TranscriptTurn
from core.stores.postgres_rows import (
    FIND_RECORDS,
    SUPERSEDE,
    episode_columns,
    episode_from_row,
    json_value,
    memory_columns,
    memory_from_row,
    search_filters,
)

SearchMode = Literal["any", "all"]

_EPISODE_COLS = episode_columns()
_MEMORY_COLS = memory_columns()
_EPISODE_WRITE_COLS = (
    "id, tenant_id, agent_id, session_id, partition, role, kind, content, metadata, created_at, "
    "content_hash, consolidated_at"
)
_MEMORY_WRITE_COLS = (
    "id, tenant_id, agent_id, session_id, kind, content, metadata, source_ids, model_version, "
    "created_at, updated_at, indexed, valid_from, valid_to"
)
_INSERT_EPISODES = f"""
INSERT INTO episodes ({_EPISODE_WRITE_COLS}, transcript_id)
SELECT u.id, u.tenant_id, u.agent_id, u.session_id, u.partition, u.role, u.kind, u.content,
       u.metadata::jsonb, u.created_at, u.content_hash, u.consolidated_at, $13::uuid
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::timestamptz[])
     AS u(id, tenant_id, agent_id, session_id, partition, role, kind, content, metadata, created_at,
          content_hash, consolidated_at)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_UPSERT_MEMORIES = f"""
INSERT INTO memory_records ({_MEMORY_WRITE_COLS}, content_hash)
SELECT u.id, u.tenant_id, u.agent_id, u.session_id, u.kind, u.content, u.metadata::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(u.source_ids::jsonb)), u.model_version,
       u.created_at, u.updated_at, u.indexed, u.valid_from, u.valid_to, u.content_hash
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::bool[],
            $13::timestamptz[], $14::timestamptz[], $15::text[])
     AS u(id, tenant_id, agent_id, session_id, kind, content, metadata, source_ids, model_version,
          created_at, updated_at, indexed, valid_from, valid_to, content_hash)
ON CONFLICT (id) DO UPDATE SET
    agent_id = EXCLUDED.agent_id, session_id = EXCLUDED.session_id, kind = EXCLUDED.kind,
    content = EXCLUDED.content, metadata = EXCLUDED.metadata, source_ids = EXCLUDED.source_ids,
    model_version = EXCLUDED.model_version, content_hash = EXCLUDED.content_hash,
    updated_at = EXCLUDED.updated_at, indexed = EXCLUDED.indexed, valid_from = EXCLUDED.valid_from,
    valid_to = EXCLUDED.valid_to
WHERE memory_records.tenant_id = EXCLUDED.tenant_id
RETURNING id, (xmax = 0) AS inserted
"""
# Each written memory's new state as its next version (the same transaction as the write).
_VERSION_COLS = (
    "tenant_id, memory_id, version, op, agent_id, session_id, kind, content, metadata, source_ids, "
    "indexed, valid_from, valid_to, changed_at, changed_by"
)
_NEXT_VERSION = (
    "COALESCE((SELECT max(v.version) FROM memory_versions v "
    "WHERE v.tenant_id = m.tenant_id AND v.memory_id = m.id), 0) + 1"
)
_RECORD_VERSIONS = f"""
INSERT INTO memory_versions ({_VERSION_COLS})
SELECT m.tenant_id, m.id, {_NEXT_VERSION},
       CASE WHEN m.id = ANY($2::uuid[]) THEN 'create' ELSE 'update' END,
       m.agent_id, m.session_id, m.kind, m.content, m.metadata, m.source_ids, m.indexed, m.valid_from,
       m.valid_to, m.updated_at, $3
FROM memory_records m WHERE m.id = ANY($1::uuid[])
"""
# A delete is recorded as a last version holding the deleted state.
_DELETE_MEMORIES = f"""
WITH m AS (DELETE FROM memory_records WHERE tenant_id = $1 AND id = ANY($2::uuid[]) RETURNING *)
INSERT INTO memory_versions ({_VERSION_COLS})
SELECT m.tenant_id, m.id, {_NEXT_VERSION}, 'delete', m.agent_id, m.session_id, m.kind, m.content,
       m.metadata, m.source_ids, m.indexed, m.valid_from, m.valid_to, now(), $3
FROM m
RETURNING memory_id
"""
# "any": OR of the query's lexemes (recall for natural-language questions); "all": websearch syntax.
# An all-stopword query gives an empty tsquery (numnode 0), which matches nothing.
_TSQUERY = {
    "any": """SELECT CASE WHEN numnode(p) = 0 THEN p ELSE replace(p::text, ' & ', ' | ')::tsquery END AS q
              FROM plainto_tsquery('english'::regconfig, $2) AS p""",
    "all": "SELECT websearch_to_tsquery('english'::regconfig, $2) AS q",
}


async def init_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init=`` hook: decode json/jsonb to Python objects (the store also copes without it)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


PING_TIMEOUT_S = 2.0


class PostgresEpisodeStore:
    """EpisodicStore on an asyncpg pool. Borrows the pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except asyncpg.DataError as exc:
            raise InvalidInput("content", f"rejected by postgres: {exc}") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("postgres", type(exc).__name__) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args, timeout=self._timeout_s)
                return rows

    async def _execute(self, sql: str, *args: Any) -> str:
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                status: str = await conn.execute(sql, *args, timeout=self._timeout_s)
                return status

    async def ping(self) -> None:
        """Answer within :data:`PING_TIMEOUT_S`: a readiness probe must not wait out the statement
        timeout behind a saturated pool (readyz then named no store until the prober gave up)."""
        timeout = min(self._timeout_s, PING_TIMEOUT_S)
        with self._translate():
            try:
                async with self._pool.acquire(timeout=timeout) as conn:
                    await conn.fetchval("SELECT 1", timeout=timeout)
            except TimeoutError as exc:
                raise StoreUnavailable("postgres", f"no answer within {timeout:g} s") from exc

    # -- episodes ---------------------------------------------------------------------------------

    async def _insert_on(
        self, conn: asyncpg.Connection, episodes: Sequence[Episode], transcript_id: uuid.UUID | None
    ) -> list[uuid.UUID]:
        cols: list[list[Any]] = [[] for _ in range(12)]
        for ep in episodes:
            values = (
                ep.id, ep.tenant_id, ep.agent_id, ep.session_id, ep.partition, ep.role.value, ep.kind,
                ep.content, json.dumps(ep.metadata), ep.created_at, ep.content_hash, ep.consolidated_at,
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        rows = await conn.fetch(_INSERT_EPISODES, *cols, transcript_id, timeout=self._timeout_s)
        new = {row["id"] for row in rows}
        ordered: list[uuid.UUID] = []
        for ep in episodes:
            if ep.id in new:
                ordered.append(ep.id)
                new.discard(ep.id)
        return ordered

    async def insert_episodes(self, episodes: Sequence[Episode]) -> list[uuid.UUID]:
        """Insert in one transaction; ids already stored are skipped. Returns the newly inserted ids."""
        if not episodes:
            return []
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn, conn.transaction():
                return await self._insert_on(conn, episodes, None)

    async def get_episode(self, *, tenant_id: str, episode_id: uuid.UUID) -> Episode | None:
        rows = await self._fetch(
            f"SELECT {_EPISODE_COLS} FROM episodes WHERE tenant_id = $1 AND id = $2", tenant_id, episode_id
        )
        return episode_from_row(rows[0]) if rows else None

    async def recent_episodes(
        self, *, tenant_id: str, session_id: str, limit: int, agent_id: str | None = None
    ) -> list[Episode]:
        """Newest ``limit`` episodes of a session, oldest first."""
        if limit <= 0:
            return []
        rows = await self._fetch(
            f"""SELECT {_EPISODE_COLS} FROM episodes
                WHERE tenant_id = $1 AND session_id = $2 AND ($3::text IS NULL OR agent_id = $3)
                ORDER BY created_at DESC, id DESC LIMIT $4""",
            tenant_id, session_id, agent_id, limit,
        )  # fmt: skip
        return [episode_from_row(r) for r in reversed(rows)]

    async def list_episodes(
        self,
        *,
        tenant_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[Episode]:
        """Keyset page ordered by (created_at, id): pass the last row's (created_at, id) as ``after``."""
        after_ts, after_id = after if after is not None else (None, None)
        rows = await self._fetch(
            f"""SELECT {_EPISODE_COLS} FROM episodes
                WHERE tenant_id = $1 AND ($2::text IS NULL OR session_id = $2)
                  AND ($3::text IS NULL OR agent_id = $3)
                  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4::timestamptz, $5::uuid))
                ORDER BY created_at, id LIMIT $6""",
            tenant_id, session_id, agent_id, after_ts, after_id, limit,
        )  # fmt: skip
        return [episode_from_row(r) for r in rows]

    async def delete_episodes(self, *, tenant_id: str, episode_ids: Sequence[uuid.UUID]) -> int:
        status = await self._execute(
            "DELETE FROM episodes WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, list(episode_ids)
        )
        return int(status.split()[-1])

    # -- transcripts ------------------------------------------------------------------------------

    async def insert_transcript(self, transcript: Transcript, episodes: Sequence[Episode]) -> bool:
        """Store the transcript and its turn episodes in one transaction; False when it already existed."""
        turns = json.dumps([t.model_dump(mode="json") for t in transcript.turns])
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn, conn.transaction():
                created = await conn.fetchval(
                    """INSERT INTO transcripts (id, tenant_id, agent_id, session_id, title, participants,
                                                metadata, turns, episode_ids, created_at)
                       VALUES ($1, $2, $3, $4, $5, $6::text[], $7::text::jsonb, $8::text::jsonb,
                               $9::uuid[], $10)
                       ON CONFLICT (id) DO NOTHING RETURNING id""",
                    transcript.id, transcript.tenant_id, transcript.agent_id, transcript.session_id,
                    transcript.title, list(transcript.participants), json.dumps(transcript.metadata), turns,
                    list(transcript.episode_ids), transcript.created_at,
                    timeout=self._timeout_s,
                )  # fmt: skip
                if created is None:
                    return False
                if episodes:
                    await self._insert_on(conn, episodes, transcript.id)
                return True

    async def get_transcript(self, *, tenant_id: str, transcript_id: uuid.UUID) -> Transcript | None:
        rows = await self._fetch(
            """SELECT id, tenant_id, agent_id, session_id, title, participants, metadata, turns,
                      episode_ids, created_at
               FROM transcripts WHERE tenant_id = $1 AND id = $2""",
            tenant_id, transcript_id,
        )  # fmt: skip
        if not rows:
            return None
        r = rows[0]
        return Transcript(
            id=r["id"], tenant_id=r["tenant_id"], agent_id=r["agent_id"], session_id=r["session_id"],
            title=r["title"], participants=list(r["participants"]), metadata=json_value(r["metadata"]),
            created_at=r["created_at"],
            turns=[TranscriptTurn.model_validate(t) for t in json_value(r["turns"])],
            episode_ids=list(r["episode_ids"]),
        )  # fmt: skip

    # -- memory records ---------------------------------------------------------------------------

    async def upsert_memories(
        self, records: Sequence[MemoryRecord], *, changed_by: str | None = None
    ) -> None:
        """Insert or update by id (last one wins within a batch); a row of another tenant is never touched.
        Each written memory's new state becomes its next version (``memory_history``), in the same
        transaction, with ``changed_by`` (an API key's name)."""
        latest = {rec.id: rec for rec in records}
        if not latest:
            return
        cols: list[list[Any]] = [[] for _ in range(15)]
        for m in latest.values():
            values = (
                m.id, m.tenant_id, m.agent_id, m.session_id, m.kind, m.content, json.dumps(m.metadata),
                json.dumps(m.source_ids), m.model_version, m.created_at, m.updated_at, m.indexed,
                m.valid_from, m.valid_to, content_hash(m.content),
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        with self._translate():
            async with self._pool.acquire(timeout=self._timeout_s) as conn, conn.transaction():
                written = await conn.fetch(_UPSERT_MEMORIES, *cols, timeout=self._timeout_s)
                await conn.execute(
                    _RECORD_VERSIONS,
                    [r["id"] for r in written],
                    [r["id"] for r in written if r["inserted"]],
                    changed_by,
                    timeout=self._timeout_s,
                )

    async def get_memory(self, *, tenant_id: str, memory_id: uuid.UUID) -> MemoryRecord | None:
        rows = await self._fetch(
            f"SELECT {_MEMORY_COLS} FROM memory_records WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            memory_id,
        )
        return memory_from_row(rows[0]) if rows else None

    async def get_memories(self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID]) -> list[MemoryRecord]:
        """The tenant's memories among ``memory_ids`` (one round trip; missing ids are skipped)."""
        rows = await self._fetch(
            f"SELECT {_MEMORY_COLS} FROM memory_records WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
            tenant_id,
            list(memory_ids),
        )
        return [memory_from_row(r) for r in rows]

    async def list_memories(
        self,
        *,
        tenant_id: str,
        agent_id: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[MemoryRecord]:
        """Keyset page ordered by (created_at, id)."""
        after_ts, after_id = after if after is not None else (None, None)
        rows = await self._fetch(
            f"""SELECT {_MEMORY_COLS} FROM memory_records
                WHERE tenant_id = $1 AND ($2::text IS NULL OR agent_id = $2)
                  AND ($3::timestamptz IS NULL OR (created_at, id) > ($3::timestamptz, $4::uuid))
                ORDER BY created_at, id LIMIT $5""",
            tenant_id, agent_id, after_ts, after_id, limit,
        )  # fmt: skip
        return [memory_from_row(r) for r in rows]

    async def delete_memories(
        self, *, tenant_id: str, memory_ids: Sequence[uuid.UUID], changed_by: str | None = None
    ) -> int:
        """Delete the tenant's memories among ``memory_ids``, each recorded as a last ``delete`` version."""
        rows = await self._fetch(_DELETE_MEMORIES, tenant_id, list(memory_ids), changed_by)
        return len(rows)

    async def memory_history(self, *, tenant_id: str, memory_id: uuid.UUID) -> list[MemoryVersion]:
        """Every version of the tenant's memory, oldest first ([] when it has none)."""
        rows = await self._fetch(
            f"""SELECT {_VERSION_COLS} FROM memory_versions
                WHERE tenant_id = $1 AND memory_id = $2 ORDER BY version""",
            tenant_id, memory_id,
        )  # fmt: skip
        return [
            MemoryVersion(
                memory_id=r["memory_id"],
                version=r["version"],
                op=r["op"],
                agent_id=r["agent_id"],
                session_id=r["session_id"],
                kind=r["kind"],
                content=r["content"],
                metadata=json_value(r["metadata"]),
                source_ids=list(r["source_ids"]),
                indexed=r["indexed"],
                valid_from=r["valid_from"],
                valid_to=r["valid_to"],
                changed_at=r["changed_at"],
                changed_by=r["changed_by"],
            )
            for r in rows
        ]

    # -- supersedes -------------------------------------------------------------------------------

    async def find_records(
        self, *, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Literal["episode", "memory"]]:
        """Which of ``ids`` are the tenant's episodes or memories (one round trip; others left out)."""
        rows = await self._fetch(FIND_RECORDS, tenant_id, list(ids))
        return {r["id"]: r["type"] for r in rows}

    async def supersede(
        self, *, tenant_id: str, links: Sequence[tuple[uuid.UUID, uuid.UUID, datetime]]
    ) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
        """Mark each (target, by, at): the tenant's episode or memory ``target`` is superseded by ``by``
        from ``at``. The earliest supersession of a row stands (a replay changes nothing). Returns the
        links applied, as (target, by, at)."""
        if not links:
            return []
        targets, by, at = (list(col) for col in zip(*links, strict=True))
        rows = await self._fetch(SUPERSEDE, tenant_id, targets, by, at)
        return [(r["id"], r["superseded_by"], r["superseded_at"]) for r in rows]

    # -- full-text search -------------------------------------------------------------------------

    async def search_text(
        self,
        *,
        tenant_id: str,
        query: str,
        k: int,
        filters: dict[str, Any] | None = None,
        mode: SearchMode = "any",
    ) -> list[tuple[Episode, float]]:
        """Episodes matching ``query`` lexically, best ``ts_rank_cd`` first. Filters: agent_id, session_id,
        kind, created_after (inclusive), created_before (exclusive), metadata (jsonb containment)."""
        rows = await self._search("episodes", _EPISODE_COLS, tenant_id, query, k, filters, mode)
        return [(episode_from_row(r), float(r["rank"])) for r in rows]

    async def search_memories_text(
        self,
        *,
        tenant_id: str,
        query: str,
        k: int,
        filters: dict[str, Any] | None = None,
        mode: SearchMode = "any",
    ) -> list[tuple[MemoryRecord, float]]:
        """Memory records matching ``query`` lexically; filters as :meth:`search_text` plus model_version."""
        rows = await self._search("memory_records", _MEMORY_COLS, tenant_id, query, k, filters, mode)
        return [(memory_from_row(r), float(r["rank"])) for r in rows]

    async def _search(
        self,
        table: Literal["episodes", "memory_records"],
        columns: str,
        tenant_id: str,
        query: str,
        k: int,
        filters: dict[str, Any] | None,
        mode: SearchMode,
    ) -> list[asyncpg.Record]:
        if k <= 0 or not query.strip():
            return []
        args: list[Any] = [tenant_id, query]
        clauses = search_filters(filters, args, memories=table == "memory_records")
        args.append(k)
        where = "".join(f" AND {c}" for c in clauses)
        sql = f"""SELECT {columns}, ts_rank_cd(tsv, s.q) AS rank
                  FROM {table}, ({_TSQUERY[mode]}) AS s
                  WHERE tenant_id = $1 AND numnode(s.q) > 0 AND tsv @@ s.q{where}
                  ORDER BY rank DESC, created_at DESC, id LIMIT ${len(args)}"""
        return await self._fetch(sql, *args)
