"""Retrieval-quality pieces shared by ingest/consolidation and the query path.

Measured on ../shared/bench (see docs/benchmarks.md): what helps conversational memory most is scoring a
turn *lexically* together with its neighbouring turns (LoCoMo R@10 63.5 -> 77.4 with BM25 alone), while
embedding a turn with its neighbours *hurts* the dense side (50.7 -> 45.3); long texts embedded as
sentence-window chunks as well as whole lift SciFact nDCG@10 (0.734 -> 0.742 fused).

- :func:`chunk_texts`: the extra texts embedded for a long record (max over its points at query time).
- :func:`lexical_query`: the query as sent to full-text search (question boilerplate removed).
- :func:`working_scores`: ranks the session buffer (recency tier) by query-term overlap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.models import Episode

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")

# Words that carry no topic in questions put to a memory ("what did X say about ...").
_QUESTION_STOPWORDS = """
    a an the and or but if of to in on at by for with from about into over after before as is are was were be
    been being am do does did doing have has had having i me my you your he him his she her it its we our they
    them their this that these those what which who whom whose when where why how whether would could should
    will shall can may might must not no yes so than then there here just also very too any some all each
    both more most other such only own same few many much up down out off again further once ever
"""
QUESTION_STOPWORDS = frozenset(_QUESTION_STOPWORDS.split())


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without question stopwords, in order, duplicates kept."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in QUESTION_STOPWORDS]


def lexical_query(query: str) -> str:
    """The query for full-text search: its content words (Postgres drops stopwords itself, but an OR
    query over a question's function words would match almost every row)."""
    words = content_words(query)
    return " ".join(dict.fromkeys(words)) if words else query.strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def chunk_texts(content: str, *, sentences: int = 3, stride: int = 2) -> list[str]:
    """Sentence-window chunks of a long text, each prefixed with its first sentence (title/heading).

    Returns [] when the text has at most ``sentences`` sentences (the whole text is embedded anyway).
    Every chunk becomes one more point of the same record; the record scores its best point.
    """
    parts = [p.strip() for p in _SENTENCE_END.split(content.strip()) if p.strip()]
    if len(parts) <= sentences:
        return []
    head, body = parts[0], parts[1:]
    out: list[str] = []
    for start in range(0, max(1, len(body) - sentences + stride), stride):
        window = body[start : start + sentences]
        if window:
            out.append(f"{head} {' '.join(window)}")
        if start + sentences >= len(body):
            break
    return out


def working_scores(
    query: str, recent: Sequence[Episode], *, always_newest: int
) -> list[tuple[Episode, float]]:
    """Session-buffer episodes ranked for ``query``: share of query content words they contain, newest
    first on ties; the ``always_newest`` latest turns are kept even without overlap (score 0)."""
    wanted = set(content_words(query))
    newest = {e.id for e in recent[-always_newest:]} if always_newest > 0 else set()
    scored: list[tuple[Episode, float, int]] = []
    for pos, episode in enumerate(recent):
        overlap = len(wanted & set(content_words(episode.content))) / len(wanted) if wanted else 0.0
        if overlap > 0 or episode.id in newest:
            scored.append((episode, overlap, pos))
    scored.sort(key=lambda t: (-t[1], -t[2]))
    return [(episode, score) for episode, score, _ in scored]
