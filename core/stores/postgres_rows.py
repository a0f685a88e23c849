"""The episodic tier's row shapes, written once: the columns each table is read with, the row → model
mappings, and the SQL form of the shared search filters (core.retrieval.query.Filters.for_stores).

Every module that reads episodes or memories from Postgres (the store, the BM25 searcher,
consolidation) selects :func:`episode_columns` / :func:`memory_columns` and maps with
:func:`episode_from_row` / :func:`memory_from_row`, so a column added to a table is added here only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.models import Episode, MemoryRecord

_EPISODE = (
    "id", "tenant_id", "agent_id", "session_id", "partition", "role", "kind", "content", "metadata",
    "created_at", "content_hash", "consolidated_at", "superseded_by", "superseded_at",
)  # fmt: skip
_MEMORY = (
    "id", "tenant_id", "agent_id", "session_id", "kind", "content", "metadata", "source_ids",
    "model_version", "created_at", "updated_at", "indexed", "valid_from", "valid_to", "superseded_by",
    "superseded_at",
)  # fmt: skip


# Which ids are the tenant's episodes or memories; and supersession, where a row's earliest one stands.
FIND_RECORDS = """
SELECT id, 'episode' AS type FROM episodes WHERE tenant_id = $1 AND id = ANY($2::uuid[])
UNION ALL
SELECT id, 'memory' AS type FROM memory_records WHERE tenant_id = $1 AND id = ANY($2::uuid[])
"""
_SUPERSEDE_TABLE = """
UPDATE {table} t SET superseded_by = l.by, superseded_at = l.at
FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS l(target, by, at)
WHERE t.tenant_id = $1 AND t.id = l.target AND (t.superseded_at IS NULL OR t.superseded_at > l.at)
RETURNING t.id, t.superseded_by, t.superseded_at
"""
# Memories that cite a replaced record in source_ids (session summaries, derived facts) are replaced
# with it; they are not among the links returned.
SUPERSEDE = f"""
WITH e AS ({_SUPERSEDE_TABLE.format(table="episodes")}),
     m AS ({_SUPERSEDE_TABLE.format(table="memory_records")}),
     derived AS (
        UPDATE memory_records t SET superseded_by = l.by, superseded_at = l.at
        FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS l(target, by, at)
        WHERE t.tenant_id = $1 AND t.source_ids @> ARRAY[l.target::text]
          AND (t.superseded_at IS NULL OR t.superseded_at > l.at)
        RETURNING t.id)
SELECT * FROM e UNION ALL SELECT * FROM m
"""


def episode_columns(alias: str = "") -> str:
    """The ``episodes`` columns an :class:`Episode` is read from (``alias``: e.g. ``"e."``)."""
    return ", ".join(alias + c for c in _EPISODE)


def memory_columns(alias: str = "") -> str:
    """The ``memory_records`` columns a :class:`MemoryRecord` is read from."""
    return ", ".join(alias + c for c in _MEMORY)


def json_value(value: Any) -> Any:
    """A json/jsonb column's value (decoded by the pool's codec, or text without it)."""
    return json.loads(value) if isinstance(value, str) else value


def episode_from_row(row: Mapping[str, Any]) -> Episode:
    return Episode(
        id=row["id"], tenant_id=row["tenant_id"], agent_id=row["agent_id"], session_id=row["session_id"],
        partition=row["partition"], role=row["role"], kind=row["kind"], content=row["content"],
        metadata=json_value(row["metadata"]) or {}, created_at=row["created_at"],
        content_hash=row["content_hash"], consolidated_at=row["consolidated_at"],
        superseded_by=row["superseded_by"], superseded_at=row["superseded_at"],
    )  # fmt: skip


def memory_from_row(row: Mapping[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row["id"], tenant_id=row["tenant_id"], agent_id=row["agent_id"], session_id=row["session_id"],
        kind=row["kind"], content=row["content"], metadata=json_value(row["metadata"]) or {},
        source_ids=list(row["source_ids"] or []), model_version=row["model_version"],
        created_at=row["created_at"], updated_at=row["updated_at"], indexed=row["indexed"],
        valid_from=row["valid_from"], valid_to=row["valid_to"], superseded_by=row["superseded_by"],
        superseded_at=row["superseded_at"],
    )  # fmt: skip


# Filter keys about currency (core.retrieval.query.Filters.for_stores); ``current_at`` differs per request.
CURRENCY_KEYS = ("current_at", "as_of")


def _moment(value: Any) -> datetime:
    """A filter's time (epoch seconds from ``for_stores``, or a datetime) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def search_filters(
    filters: dict[str, Any] | None, args: list[Any], *, memories: bool, alias: str = ""
) -> list[str]:
    """SQL predicates for the shared filter keys; values are appended to ``args`` as parameters.

    ``kind`` is one value or any of several; ``created_after`` is inclusive, ``created_before`` exclusive;
    ``metadata`` is jsonb containment; ``unconsolidated`` (episodes only) keeps the episodes consolidation
    has not reached yet; a memory search never sees unindexed memories. ``current_at`` (a time) leaves
    out what was superseded or had expired by then, and memories whose validity starts later;
    ``as_of`` leaves out what did not exist (or, a memory, was not valid) yet at that time. ``alias``
    prefixes the columns (``"e."`` in a joined query).
    """
    clauses: list[str] = []
    filters = filters or {}
    col = alias
    for name in ("agent_id", "session_id", "kind"):
        value = filters.get(name)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            args.append([str(v) for v in value])
            clauses.append(f"{col}{name} = ANY(${len(args)}::text[])")
        else:
            args.append(value)
            clauses.append(f"{col}{name} = ${len(args)}")
    for name, op in (("created_after", ">="), ("created_before", "<")):
        value = filters.get(name)
        if value is not None:
            args.append(value)
            clauses.append(f"{col}created_at {op} ${len(args)}::timestamptz")
    meta = filters.get("metadata")
    if meta:
        args.append(json.dumps(meta))
        clauses.append(f"{col}metadata @> ${len(args)}::text::jsonb")
    if filters.get("current_at") is not None:
        args.append(_moment(filters["current_at"]))
        at = f"${len(args)}::timestamptz"
        clauses.append(f"({col}superseded_at IS NULL OR {col}superseded_at > {at})")
        if memories:
            clauses.append(f"({col}valid_to IS NULL OR {col}valid_to > {at})")
            clauses.append(f"({col}valid_from IS NULL OR {col}valid_from <= {at})")
    if filters.get("as_of") is not None:
        args.append(_moment(filters["as_of"]))
        start = f"coalesce({col}valid_from, {col}created_at)" if memories else f"{col}created_at"
        clauses.append(f"{start} <= ${len(args)}::timestamptz")
    if memories:
        clauses.append(f"{col}indexed")  # an unindexed memory (MemoryIn.index false) is never searched
    if memories and filters.get("model_version") is not None:
        args.append(filters["model_version"])
        clauses.append(f"{col}model_version = ${len(args)}")
    if not memories and filters.get("unconsolidated"):
        clauses.append(f"{col}consolidated_at IS NULL")  # the partial index ix_episodes_fresh_tsv
    return clauses
