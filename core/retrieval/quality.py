"""Retrieval-quality pieces shared by ingest/consolidation and the query path.

- :func:`neighbour_window_text`: what consolidation embeds for a conversation turn: the turn with its
  neighbours in the same session, so that a short reply ("Yes, last Tuesday!") carries its topic.
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


def neighbour_window_text(
    turns: Sequence[str], index: int, *, before: int = 1, after: int = 1, separator: str = "\n"
) -> str:
    """The text to embed for ``turns[index]``: up to ``before`` previous and ``after`` next turns of the
    same session around it, in order, joined by ``separator``.

    ``turns`` are one session's rendered turns in time order (``"Speaker: text"`` or the content as
    stored). The episode's own content stays the point's display content; only the vector sees the window.
    """
    if not 0 <= index < len(turns):
        raise IndexError(index)
    lo = max(0, index - before)
    hi = min(len(turns), index + after + 1)
    return separator.join(turns[lo:hi])


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
