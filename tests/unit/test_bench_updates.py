"""The knowledge-update benchmark's generated data and its scoring rule."""

from __future__ import annotations

from bench.updates import _episodes, _score
from bench.updates_data import DISTRACTORS, REPLIES, SLOTS, Question, generate


def test_generation_is_seeded_and_every_change_names_the_statement_it_replaces() -> None:
    data = generate(12)
    assert [t.content for c in generate(12) for t in c.turns] == [t.content for c in data for t in c.turns]
    assert [t.content for t in generate(12, seed=8)[0].turns] != [t.content for t in data[0].turns]
    for conv in data:
        by_key = {t.key: t for t in conv.turns}
        assert len(by_key) == len(conv.turns)
        changed = [q for q in conv.questions if q.stale]
        assert len(conv.questions) == len(SLOTS) and len(changed) == 3
        assert sum(len(q.stale) == 2 for q in changed) == 1
        times = [t.created_at for t in conv.turns]
        assert times == sorted(times)
        for q in conv.questions:
            chain = [*q.stale, q.current]
            stated = [t for t in conv.turns if any(v in t.content for v in chain)]
            # Each value is stated once, in order, each change replacing the previous statement.
            assert [next(v for v in chain if v in t.content) for t in stated] == chain
            assert [t.replaces for t in stated] == [None, *(t.key for t in stated[:-1])]
            assert all(a == b or a not in b for a in chain for b in chain)
        noise = [t.content for t in conv.turns if t.content in DISTRACTORS + REPLIES]
        assert noise and not any(v in n for q in conv.questions for v in (q.current, *q.stale) for n in noise)


def test_only_the_declared_flavour_sends_supersedes_with_session_scoped_keys() -> None:
    conv = generate(1)[0]
    declared = _episodes(conv, "decl-x", declared=True)
    plain = _episodes(conv, "und-x", declared=False)
    keys = {e["id"] for e in declared}
    links = [e["supersedes"][0] for e in declared if "supersedes" in e]
    assert len(links) == 4 and set(links) <= keys and all(k.startswith("decl-x-") for k in links)
    assert not any("supersedes" in e for e in plain)


def test_an_answer_holds_the_current_value_and_no_stale_one() -> None:
    q = Question("s", "budget", "What is my hotel budget per night?", "200 EUR", ("150 EUR",))
    assert _score("[2024-03-01] budget is 200 EUR a night", q) == (True, True, True)
    assert _score("budget 150 EUR\nnow 200 EUR", q) == (False, True, True)
    assert _score("now 200 EUR\nbudget 150 EUR", q) == (False, True, False)
    assert _score("budget 150 EUR", q) == (False, False, False)
