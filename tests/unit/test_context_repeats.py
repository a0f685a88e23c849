"""No repetition in a packed context: repeated sentences, a summary beside its turns; redundancy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.models import ScoredSnippet, Tier
from core.retrieval.packing import pack_context
from core.retrieval.repeats import covers, redundancy, sentence_key, sentence_keys, sentences, without_repeats
from core.retrieval.tokens import load_token_counter

COUNTER = load_token_counter()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SEAT = "I always take a window seat."
BUDGET = "My budget is 150 EUR a night."
HOTEL = "Book the hotel near the old harbour please."


def turn(i: int, text: str, score: float) -> ScoredSnippet:
    return ScoredSnippet(
        tier=Tier.EPISODIC, content=text, score=score, source_ids=[f"ep-{i}"], kind="message",
        created_at=T0 + timedelta(minutes=i), metadata={"record_type": "episode"},
    )  # fmt: skip


def summary(text: str, sources: list[int], score: float, *, extractive: bool = True) -> ScoredSnippet:
    return ScoredSnippet(
        tier=Tier.SEMANTIC, content=text, score=score, source_ids=["sum-1", *(f"ep-{i}" for i in sources)],
        kind="summary", created_at=T0, metadata={"record_type": "summary", "extractive": extractive},
    )  # fmt: skip


def test_sentences_and_keys() -> None:
    assert sentences("One two three four. Five six seven eight!\nNine ten eleven twelve") == [
        "One two three four.",
        "Five six seven eight!",
        "Nine ten eleven twelve",
    ]
    assert (
        sentence_key("user: I always take a WINDOW seat!")
        == sentence_key(SEAT)
        == "i always take a window seat"
    )
    assert sentence_key("Yes, sure.") is None  # too short to count as a repeat
    assert sentence_keys(f"{SEAT} Ok. {BUDGET}") == {sentence_key(SEAT), sentence_key(BUDGET)}
    text, dropped = without_repeats(f"user: {SEAT} {HOTEL}", {sentence_key(SEAT)})  # type: ignore[arg-type]
    assert (text, dropped) == (HOTEL, 1)
    assert without_repeats(f"{SEAT} {HOTEL} {SEAT}", set()) == (f"{SEAT} {HOTEL}", 1)  # within one text too


def test_redundancy_is_the_share_of_repeated_tokens() -> None:
    assert redundancy([]) == 0.0
    assert redundancy([SEAT, BUDGET]) == 0.0
    # The summary repeats both turns: its two sentences (7 words each, the label with the first) of 27.
    assert redundancy([SEAT, BUDGET, f"user: {SEAT} {BUDGET}"]) == 14 / 27
    assert redundancy(["Yes.", "Yes."]) == 0.0  # short sentences never count as repeats
    assert 0 < redundancy([SEAT, SEAT], COUNTER) == 0.5


def test_the_readme_tour_context_holds_each_fact_once() -> None:
    """Three turns and their session summary (the extractive summariser's "speaker: sentence" text)."""
    ranked = [
        summary(f"user: {SEAT} {BUDGET} {HOTEL}", [0, 1, 2], 0.9),
        turn(0, SEAT, 0.8),
        turn(1, BUDGET, 0.7),
        turn(2, HOTEL, 0.6),
    ]
    packed = pack_context(ranked, token_budget=256, counter=COUNTER, query="which seat and budget?")
    assert packed.text.count("window seat") == 1 and packed.text.count("150 EUR") == 1
    assert redundancy([s.content for s in packed.snippets], COUNTER) == 0.0
    raw = pack_context(ranked, token_budget=256, counter=COUNTER, dedupe=False)
    assert raw.text.count("window seat") == 2  # the control: packed as ranked, it repeats
    assert redundancy([s.content for s in raw.snippets], COUNTER) > 0.4


def test_a_summary_after_its_turns_keeps_only_what_they_lack() -> None:
    ranked = [turn(0, SEAT, 0.9), summary(f"user: {SEAT} {HOTEL}", [0, 2], 0.8)]
    packed = pack_context(ranked, token_budget=256, counter=COUNTER, query="window seat hotel")
    assert [s.content for s in packed.snippets] == [SEAT, HOTEL]
    kept = next(s for s in packed.snippets if s.kind == "summary")
    assert kept.metadata["repeats_dropped"] == 1
    assert packed.tokens_used == COUNTER.count_once(packed.text) <= 256


def test_a_paraphrasing_summary_and_its_turns_by_source_ids() -> None:
    """An LLM's summary shares no sentence with the turns: a covered turn is packed only for query words
    the summary lacks, and a summary of packed turns only when it adds query words."""
    text = "The traveller wants window seats and spends at most 150 EUR per night."
    llm = summary(text, [0, 1], 0.9, extractive=False)
    ranked = [llm, turn(0, SEAT, 0.8), turn(1, BUDGET, 0.7), turn(5, HOTEL, 0.6)]
    packed = pack_context(ranked, token_budget=256, counter=COUNTER, query="window seats")
    contents = [s.content for s in packed.snippets]
    assert contents[0] == llm.content and SEAT not in contents and BUDGET not in contents
    assert HOTEL in contents  # a turn the summary was not built from is packed as ranked
    packed = pack_context(ranked, token_budget=256, counter=COUNTER, query="window seats and my budget")
    contents = [s.content for s in packed.snippets]
    assert BUDGET in contents and SEAT not in contents  # "budget" is a query word the summary lacks

    turns_first = [turn(0, SEAT, 0.9), turn(1, BUDGET, 0.8), llm]
    packed = pack_context(turns_first, token_budget=256, counter=COUNTER, query="window seat budget")
    assert llm.content not in [s.content for s in packed.snippets]
    packed = pack_context(turns_first, token_budget=256, counter=COUNTER, query="traveller nightly spend")
    assert llm.content in [s.content for s in packed.snippets]


def test_an_extractive_summary_does_not_hide_the_turns_it_left_out() -> None:
    """Its source ids name every turn of the window, but it copies only some sentences: a turn it left
    out is packed as ranked."""
    ranked = [summary(f"user: {SEAT}", [0, 1], 0.9), turn(1, BUDGET, 0.8)]
    packed = pack_context(ranked, token_budget=256, counter=COUNTER, query="window seat")
    assert [s.content for s in packed.snippets] == [f"user: {SEAT}", BUDGET]


def test_evidence_coverage() -> None:
    context = [f"user: {SEAT}", HOTEL]
    keys = set().union(*(sentence_keys(t) for t in context))
    assert covers(SEAT, keys, " ".join(context))
    assert not covers(BUDGET, keys, " ".join(context))
    assert covers("Ok.", keys, "ok. fine") and not covers("Sure.", keys, "ok. fine")
