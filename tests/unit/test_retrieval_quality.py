"""Quality helpers: chunking of long texts, lexical query, working-tier ranking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from core.ids import content_hash
from core.models import Episode, Role
from core.retrieval.quality import chunk_texts, lexical_query, working_scores


def test_chunks_are_sentence_windows_prefixed_with_the_heading() -> None:
    text = "A title. One here. Two here! Three here? Four here. Five here."
    chunks = chunk_texts(text, sentences=3, stride=2)
    assert chunks == [
        "A title. One here. Two here! Three here?",
        "A title. Three here? Four here. Five here.",
    ]
    assert chunk_texts("Short. Text.", sentences=3) == []
    covered = " ".join(chunks)
    assert all(s in covered for s in ["One here.", "Five here."])


def test_lexical_query_keeps_content_words() -> None:
    query = "When did Caroline go to the LGBTQ support group?"
    assert lexical_query(query) == "caroline go lgbtq support group"
    assert lexical_query("what is it?") == "what is it?"  # nothing left: the query as given


def _ep(text: str, i: int) -> Episode:
    return Episode(
        id=uuid.uuid4(),
        tenant_id="t",
        agent_id="a",
        session_id="s",
        partition=0,
        role=Role.USER,
        kind="message",
        content=text,
        created_at=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        content_hash=content_hash(text),
    )


def test_working_scores_rank_by_overlap_then_recency_and_keep_the_newest() -> None:
    recent = [_ep("dentist on Monday", 0), _ep("lunch plans", 1), _ep("dentist moved", 2), _ep("ok", 3)]
    ranked = working_scores("when is the dentist?", recent, always_newest=1)
    assert [e.content for e, _ in ranked] == ["dentist moved", "dentist on Monday", "ok"]
    assert ranked[-1][1] == 0.0
    assert working_scores("dentist", recent, always_newest=0)[0][0].content == "dentist moved"
