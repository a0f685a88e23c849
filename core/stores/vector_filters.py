"""Search filters of the semantic tier, parsed once into backend-neutral conditions.

Both vector backends (Qdrant client, Qdrant edge) render the same conditions, so a filter means the same
thing everywhere. Time windows are half-open: ``created_after <= created_ts < created_before``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import qdrant_edge as edge
from qdrant_client import models

from core.errors import InvalidInput
from core.models import JsonDict

TENANT_FIELD = "tenant_id"
TIME_FIELD = "created_ts"
SOURCES_FIELD = "source_ids"
VERSION_FIELD = "model_version"
METADATA_FIELD = "metadata"
# Currency (core.points.payload): when a point stops being current (superseded, or its validity ends) and
# when it starts (an explicit valid_from; START_FIELD: valid_from or else created_ts).
SUPERSEDED_FIELD = "superseded_at_ts"
VALID_FROM_FIELD = "valid_from_ts"
VALID_TO_FIELD = "valid_to_ts"
START_FIELD = "start_ts"

# Payload keys a search may filter on by equality (a value or a list meaning any-of).
KEYWORD_FILTERS = ("agent_id", "session_id", "kind", "record_type", "role", "record_id")
# Payload fields indexed in every collection: (field, schema). tenant_id is indexed as the tenant key.
KEYWORD_INDEXES = ("agent_id", "session_id", "kind", "record_type", SOURCES_FIELD)
# Numeric payload fields indexed in every collection (the time filters and the currency conditions).
FLOAT_INDEXES = (TIME_FIELD, SUPERSEDED_FIELD, VALID_FROM_FIELD, VALID_TO_FIELD, START_FIELD)

_METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_MAX_ANY_VALUES = 1024

Scalar = str | int | bool


@dataclass(frozen=True, slots=True)
class Match:
    """``key`` equals ``value``."""

    key: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class MatchAnyOf:
    """``key`` (or any element of it, for arrays) is one of ``values``."""

    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """Numeric range; ``None`` bounds are open. ``lt`` and ``gt`` are strict, the others inclusive."""

    key: str
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    gt: float | None = None


@dataclass(frozen=True, slots=True)
class Unless:
    """The point must NOT match ``range`` (a point without the field passes: "not superseded yet")."""

    range: Range


Condition = Match | MatchAnyOf | Range | Unless


def currency_conditions(*, current_at: float | None, as_of: float | None) -> list[Condition]:
    """``current_at``: leave out points superseded or expired by then, or whose validity starts later;
    ``as_of``: leave out points that did not exist (or were not valid) yet then."""
    out: list[Condition] = []
    if current_at is not None:
        out += [
            Unless(Range(SUPERSEDED_FIELD, lte=current_at)),
            Unless(Range(VALID_TO_FIELD, lte=current_at)),
            Unless(Range(VALID_FROM_FIELD, gt=current_at)),
        ]
    if as_of is not None:
        out.append(Unless(Range(START_FIELD, gt=as_of)))
    return out


def to_timestamp(value: Any, *, field: str) -> float:
    """A datetime, ISO 8601 string or epoch seconds as epoch seconds (naive times are UTC)."""
    if isinstance(value, bool):
        raise InvalidInput(field, "expected a datetime, ISO 8601 string or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInput(field, "must be finite")
        return float(value)
    moment: datetime
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(field, f"not an ISO 8601 datetime: {value!r}") from exc
    elif isinstance(value, datetime):
        moment = value
    else:
        raise InvalidInput(field, "expected a datetime, ISO 8601 string or epoch seconds")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _equality(key: str, value: Any, *, field: str) -> Condition:
    if isinstance(value, str | bool | int):
        return Match(key, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(field, "must be finite")
        return Range(key, gte=value, lte=value)
    if isinstance(value, list | tuple):
        if not value:
            raise InvalidInput(field, "an any-of list must not be empty")
        if len(value) > _MAX_ANY_VALUES:
            raise InvalidInput(field, f"at most {_MAX_ANY_VALUES} values")
        if all(isinstance(v, str) for v in value):
            return MatchAnyOf(key, tuple(str(v) for v in value))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return MatchAnyOf(key, tuple(int(v) for v in value))
        raise InvalidInput(field, "an any-of list holds only strings or only integers")
    raise InvalidInput(field, f"unsupported filter value of type {type(value).__name__}")


def _metadata_conditions(items: Any, *, field: str) -> list[Condition]:
    if not isinstance(items, dict):
        raise InvalidInput(field, "expected an object of metadata key → value")
    out: list[Condition] = []
    for key, value in items.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise InvalidInput(f"{field}.{key}", "metadata keys are 1-64 of [A-Za-z0-9_-]")
        out.append(_equality(f"{METADATA_FIELD}.{key}", value, field=f"{field}.{key}"))
    return out


def parse_filters(tenant_id: str, filters: JsonDict | None) -> list[Condition]:
    """The conditions of one search: always the tenant, then each filter key (unknown keys are refused).

    Keys: agent_id, session_id, kind, record_type, role, record_id (value or any-of list), created_after /
    created_before (datetime, ISO string or epoch seconds), ``metadata`` (object) or ``metadata.<key>``,
    ``current_at`` / ``as_of`` (times, see :func:`currency_conditions`).
    """
    if not isinstance(tenant_id, str) or not tenant_id:
        raise InvalidInput("tenant_id", "must be a non-empty string")
    conditions: list[Condition] = [Match(TENANT_FIELD, tenant_id)]
    after: float | None = None
    before: float | None = None
    current_at: float | None = None
    as_of: float | None = None
    for key, value in (filters or {}).items():
        field = f"filters.{key}"
        if value is None:
            continue
        if key in KEYWORD_FILTERS:
            conditions.append(_equality(key, value, field=field))
        elif key == "created_after":
            after = to_timestamp(value, field=field)
        elif key == "created_before":
            before = to_timestamp(value, field=field)
        elif key == "current_at":
            current_at = to_timestamp(value, field=field)
        elif key == "as_of":
            as_of = to_timestamp(value, field=field)
        elif key == METADATA_FIELD:
            conditions.extend(_metadata_conditions(value, field=field))
        elif key.startswith(METADATA_FIELD + "."):
            conditions.extend(_metadata_conditions({key.split(".", 1)[1]: value}, field="filters.metadata"))
        else:
            raise InvalidInput(field, "unknown filter")
    if after is not None or before is not None:
        conditions.append(Range(TIME_FIELD, gte=after, lt=before))
    return conditions + currency_conditions(current_at=current_at, as_of=as_of)


def sources_condition(source_ids: Sequence[str]) -> MatchAnyOf:
    """Points whose ``source_ids`` payload array holds any of the given ids."""
    if not source_ids or not all(isinstance(s, str) and s for s in source_ids):
        raise InvalidInput("source_ids", "must be a non-empty list of non-empty strings")
    return MatchAnyOf(SOURCES_FIELD, tuple(source_ids))


def superseded_marks(
    tenant_id: str, marks: Sequence[tuple[str, str, float]]
) -> list[tuple[list[Condition], JsonDict]]:
    """For each (source id, superseding id, epoch seconds): the points to mark (the tenant's points derived
    from the source that carry no earlier mark) and the payload to set on them."""
    out: list[tuple[list[Condition], JsonDict]] = []
    for source, by, at in marks:
        where: list[Condition] = [
            Match(TENANT_FIELD, tenant_id),
            sources_condition([source]),
            Unless(Range(SUPERSEDED_FIELD, lte=at)),
        ]
        out.append((where, {SUPERSEDED_FIELD: at, "superseded_by": by}))
    return out


def to_qdrant_filter(conditions: Sequence[Condition]) -> models.Filter:
    """Render conditions as a qdrant-client filter (server and local mode)."""
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    for cond in conditions:
        if isinstance(cond, Match):
            must.append(models.FieldCondition(key=cond.key, match=models.MatchValue(value=cond.value)))
        elif isinstance(cond, MatchAnyOf):
            must.append(models.FieldCondition(key=cond.key, match=models.MatchAny(any=list(cond.values))))
        elif isinstance(cond, Unless):
            must_not.append(_qdrant_range(cond.range))
        else:
            must.append(_qdrant_range(cond))
    return models.Filter(must=must, must_not=must_not or None)


def _qdrant_range(cond: Range) -> models.FieldCondition:
    rng = models.Range(gte=cond.gte, lt=cond.lt, lte=cond.lte, gt=cond.gt)
    return models.FieldCondition(key=cond.key, range=rng)


def _edge_range(cond: Range) -> edge.FieldCondition:
    return edge.FieldCondition(
        cond.key, range=edge.RangeFloat(gte=cond.gte, lt=cond.lt, lte=cond.lte, gt=cond.gt)
    )


def to_edge_filter(conditions: Sequence[Condition]) -> edge.Filter:
    """Render backend-neutral conditions as a Qdrant Edge filter."""
    must: list[edge.FieldCondition | edge.Filter] = []
    must_not: list[edge.FieldCondition | edge.Filter] = []
    for cond in conditions:
        if isinstance(cond, Match):
            must.append(edge.FieldCondition(cond.key, match=edge.MatchValue(cond.value)))
        elif isinstance(cond, MatchAnyOf):
            must.append(
                edge.FieldCondition(
                    cond.key, match=edge.MatchAny(cast(list[str] | list[int], list(cond.values)))
                )
            )
        elif isinstance(cond, Unless):
            must_not.append(_edge_range(cond.range))
        else:
            must.append(_edge_range(cond))
    return edge.Filter(must=list(must), must_not=list(must_not) or None)
