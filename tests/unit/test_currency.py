"""Currency on the read path: the filters every tier gets, the session buffer's rule, and packing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hybridmem_client.models import EpisodeIn, MemoryIn, TranscriptTurnIn
from pydantic import ValidationError

from core.ids import content_hash
from core.models import Episode, Role, ScoredSnippet, Tier
from core.retrieval.packing import pack_context, render_snippet
from core.retrieval.query import Filters
from core.retrieval.tokens import load_token_counter
from core.stores.vector_filters import (
    START_FIELD,
    SUPERSEDED_FIELD,
    VALID_FROM_FIELD,
    VALID_TO_FIELD,
    Range,
    Unless,
    parse_filters,
)

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
COUNTER = load_token_counter()


def test_filters_ask_the_stores_for_what_is_current_by_default() -> None:
    before = time.time()
    plain = Filters.of().for_stores()
    assert set(plain) == {"current_at"} and before <= plain["current_at"] <= time.time()
    assert Filters.of(as_of=T0).for_stores() == {"current_at": T0.timestamp(), "as_of": T0.timestamp()}
    assert Filters.of(include_superseded=True).for_stores() == {}
    assert Filters.of(as_of=T0, include_superseded=True).for_stores() == {"as_of": T0.timestamp()}
    naive = Filters.of(as_of=T0.replace(tzinfo=None))  # naive times are UTC, as everywhere
    assert naive.as_of == T0


def test_vector_conditions_leave_out_marked_points_and_pass_unmarked_ones() -> None:
    at = T0.timestamp()
    conditions = parse_filters("t", {"current_at": at, "as_of": at})
    assert conditions[1:] == [
        Unless(Range(SUPERSEDED_FIELD, lte=at)),
        Unless(Range(VALID_TO_FIELD, lte=at)),
        Unless(Range(VALID_FROM_FIELD, gt=at)),
        Unless(Range(START_FIELD, gt=at)),
    ]


def _episode(at: datetime, *, superseded_at: datetime | None = None) -> Episode:
    return Episode(
        id=uuid.uuid4(), tenant_id="t", agent_id="a", session_id="s", partition=0, role=Role.USER,
        kind="message", content="x", created_at=at, content_hash=content_hash("x"),
        superseded_by=uuid.uuid4() if superseded_at else None, superseded_at=superseded_at,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "created", "superseded", "kept"),
    [
        (Filters.of(), T0, None, True),
        (Filters.of(), T0, T0 + timedelta(days=1), False),
        (Filters.of(as_of=T0 + timedelta(hours=1)), T0, T0 + timedelta(days=1), True),
        (Filters.of(as_of=T0 - timedelta(hours=1)), T0, None, False),  # did not exist yet
        (Filters.of(include_superseded=True), T0, T0 + timedelta(days=1), True),
    ],
)
def test_session_buffer_applies_the_same_rule(
    filters: Filters, created: datetime, superseded: datetime | None, kept: bool
) -> None:
    assert filters.matches(_episode(created, superseded_at=superseded)) is kept


def _snippet(own: str, content: str, **extra: object) -> ScoredSnippet:
    return ScoredSnippet(
        tier=Tier.SEMANTIC, content=content, score=1.0, source_ids=[own], created_at=T0, **extra
    )  # type: ignore[arg-type]


def test_a_superseded_snippet_is_not_packed_beside_its_successor() -> None:
    old = _snippet("old", "Budget is 150 EUR.", superseded_by="new", superseded_at=T0 + timedelta(days=9))
    new = _snippet("new", "Budget is 200 EUR now.")
    lone = _snippet("lone", "Budget was 120 EUR.", superseded_by="gone", superseded_at=T0)
    packed = pack_context([old, new, lone], token_budget=500, counter=COUNTER)
    assert [s.source_ids[0] for s in packed.snippets] == ["new", "lone"]  # lone's successor is absent
    assert "[2024-05-01 09:00 | superseded 2024-05-01] Budget was 120 EUR." in packed.text


def test_a_line_shows_validity() -> None:
    s = _snippet("m", "Office on Harbour Street.", valid_from=T0, valid_to=T0 + timedelta(days=30))
    assert (
        render_snippet(s)
        == "[2024-05-01 09:00 | valid from 2024-05-01 to 2024-05-31] Office on Harbour Street."
    )
    assert render_snippet(_snippet("e", "plain")) == "[2024-05-01 09:00] plain"


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_a_time_outside_utc_years_1_to_9999_is_refused(when: str) -> None:
    """Found by the schemathesis run: such a time was stored and read back as a naive year-1 time (the
    first and last instants are ±infinity to Postgres clients)."""
    base = {"agent_id": "a", "session_id": "s", "content": "x"}
    for model, field in (
        (EpisodeIn, "created_at"),
        (MemoryIn, "valid_from"),
        (TranscriptTurnIn, "created_at"),
    ):
        base["speaker"] = "x"
        body = {k: v for k, v in base.items() if k in model.model_fields} | {field: when}
        with pytest.raises(ValidationError, match="within the years 1-9999"):
            model.model_validate(body)
    ok = {"agent_id": "a", "session_id": "s", "content": "x", "created_at": "0001-01-01T00:00:01Z"}
    assert EpisodeIn.model_validate(ok).created_at is not None
