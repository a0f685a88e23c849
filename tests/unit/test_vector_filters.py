"""Search filters → backend-neutral conditions → qdrant-client and Qdrant Edge filters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import qdrant_edge as edge
from qdrant_client import models

from core.errors import InvalidInput
from core.models import VectorPoint
from core.stores.qdrant_index import checked_points
from core.stores.vector_filters import (
    Match,
    MatchAnyOf,
    Range,
    parse_filters,
    sources_condition,
    to_edge_filter,
    to_qdrant_filter,
    to_timestamp,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_tenant_always_comes_first() -> None:
    assert parse_filters("acme", None) == [Match("tenant_id", "acme")]
    assert parse_filters("acme", {"agent_id": "a1"}) == [Match("tenant_id", "acme"), Match("agent_id", "a1")]


@pytest.mark.parametrize("tenant", ["", None, 3])
def test_tenant_is_required(tenant: Any) -> None:
    with pytest.raises(InvalidInput, match="tenant_id"):
        parse_filters(tenant, {})


def test_keyword_filters_take_a_value_or_an_any_of_list() -> None:
    conds = parse_filters("t", {"session_id": "s1", "kind": ["fact", "summary"], "role": None})
    assert conds[1:] == [Match("session_id", "s1"), MatchAnyOf("kind", ("fact", "summary"))]


@pytest.mark.parametrize("bad", [[], [1, "a"], [1.5], {"a": 1}])
def test_bad_any_of_lists_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput, match=r"filters\.kind"):
        parse_filters("t", {"kind": bad})


def test_time_window_is_half_open_on_created_ts() -> None:
    conds = parse_filters("t", {"created_after": T0, "created_before": (T0 + timedelta(hours=1)).isoformat()})
    assert conds[-1] == Range("created_ts", gte=T0.timestamp(), lt=T0.timestamp() + 3600)
    only_before = parse_filters("t", {"created_before": T0})
    assert only_before[-1] == Range("created_ts", gte=None, lt=T0.timestamp())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0.timestamp()),
        ("2026-01-01T00:00:00", T0.timestamp()),  # naive means UTC
        ("2026-01-01T02:00:00+02:00", T0.timestamp()),
        (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), T0.timestamp()),
        (1_767_225_600, 1_767_225_600.0),
    ],
)
def test_timestamps(value: Any, expected: float) -> None:
    assert to_timestamp(value, field="f") == expected


@pytest.mark.parametrize("value", ["soon", True, float("nan"), [T0]])
def test_bad_timestamps_name_the_field(value: Any) -> None:
    with pytest.raises(InvalidInput, match=r"filters\.created_after"):
        parse_filters("t", {"created_after": value})


def test_metadata_equality_both_spellings() -> None:
    nested = parse_filters("t", {"metadata": {"topic": "price", "round": 2, "ok": True, "w": 0.5}})
    assert nested[1:] == [
        Match("metadata.topic", "price"),
        Match("metadata.round", 2),
        Match("metadata.ok", True),
        Range("metadata.w", gte=0.5, lte=0.5),
    ]
    assert parse_filters("t", {"metadata.topic": ["a", "b"]})[1:] == [
        MatchAnyOf("metadata.topic", ("a", "b"))
    ]


@pytest.mark.parametrize("key", ["a.b", "a b", "", "x" * 65, "a[0]"])
def test_metadata_keys_cannot_escape_the_metadata_object(key: str) -> None:
    with pytest.raises(InvalidInput, match="metadata"):
        parse_filters("t", {"metadata": {key: "v"}})


def test_unknown_filters_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"filters\.tenant_id"):
        parse_filters("t", {"tenant_id": "other"})  # the tenant comes from the API key only
    with pytest.raises(InvalidInput, match=r"filters\.colour"):
        parse_filters("t", {"colour": "red"})


def test_sources_condition() -> None:
    assert sources_condition(["e1", "e2"]) == MatchAnyOf("source_ids", ("e1", "e2"))
    with pytest.raises(InvalidInput):
        sources_condition([])
    with pytest.raises(InvalidInput):
        sources_condition(["e1", ""])


def test_qdrant_rendering() -> None:
    rendered = to_qdrant_filter(
        [Match("tenant_id", "t"), MatchAnyOf("kind", ("a", "b")), Range("created_ts", gte=1.0, lt=2.0)]
    )
    assert rendered == models.Filter(
        must=[
            models.FieldCondition(key="tenant_id", match=models.MatchValue(value="t")),
            models.FieldCondition(key="kind", match=models.MatchAny(any=["a", "b"])),
            models.FieldCondition(key="created_ts", range=models.Range(gte=1.0, lt=2.0)),
        ]
    )


def test_edge_rendering() -> None:
    rendered = to_edge_filter(
        [Match("tenant_id", "t"), MatchAnyOf("round", (1, 2)), Range("created_ts", gte=1.0, lt=2.0)]
    )
    must = rendered.must
    assert must is not None and len(must) == 3
    first, second, third = must
    assert isinstance(first, edge.FieldCondition) and first.key == "tenant_id"
    assert isinstance(first.match, edge.MatchValue) and first.match.value == "t"
    assert isinstance(second, edge.FieldCondition) and isinstance(second.match, edge.MatchAny)
    assert list(second.match.value) == [1, 2]
    assert isinstance(third, edge.FieldCondition) and isinstance(third.range, edge.RangeFloat)
    assert (third.range.gte, third.range.lt, third.range.lte) == (1.0, 2.0, None)


def _point(**payload: Any) -> VectorPoint:
    return VectorPoint(id=uuid.uuid4(), vector=[0.0, 1.0], payload=payload)


def test_checked_points_fill_created_ts_and_refuse_strangers() -> None:
    ok = _point(tenant_id="t", model_version="m@1", created_at=T0.isoformat())
    (checked,) = checked_points([ok], version_key="m@1", dimension=2)
    assert checked.payload["created_ts"] == T0.timestamp()
    with pytest.raises(InvalidInput, match=r"points\[0\]\.payload\.model_version"):
        checked_points([_point(tenant_id="t", model_version="m@2")], version_key="m@1", dimension=2)
    with pytest.raises(InvalidInput, match=r"points\[0\]\.payload\.tenant_id"):
        checked_points([_point(model_version="m@1")], version_key="m@1", dimension=2)
    with pytest.raises(InvalidInput, match=r"points\[0\]\.vector"):
        checked_points([_point(tenant_id="t", model_version="m@1")], version_key="m@1", dimension=3)
