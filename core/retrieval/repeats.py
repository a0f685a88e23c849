"""Sentences as a context sees them: what counts as the same sentence, and how much of a context repeats.

A context repeats itself when a session summary is packed beside the turns it was built from (the
extractive summariser copies their sentences, prefixed with the speaker), or when the same sentence was
said twice. Two sentences are the same when their words are, ignoring case, punctuation and a leading
``Speaker:`` label. Sentences of fewer than ``MIN_WORDS`` words ("Yes.", "Thanks!") never count as
repeats: they carry little and recur naturally in a conversation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from core.retrieval.tokens import TokenCounter

MIN_WORDS = 4

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_SPEAKER = re.compile(r"^[^\s:][^:\n]{0,40}:\s+(?=\S)")
_WORD = re.compile(r"\w+", re.UNICODE)


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, stripped (split after . ! ? and at line breaks)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def sentence_key(sentence: str) -> str | None:
    """What identifies a sentence (its lower-cased words, without a speaker label); None when it is too
    short to count as a repeat."""
    words = _WORD.findall(_SPEAKER.sub("", sentence, count=1).lower())
    return " ".join(words) if len(words) >= MIN_WORDS else None


def sentence_keys(text: str) -> set[str]:
    return {k for k in (sentence_key(s) for s in sentences(text)) if k is not None}


def without_repeats(text: str, seen: set[str]) -> tuple[str, int]:
    """``text`` without the sentences whose key is in ``seen`` or earlier in ``text``, and how many were
    dropped (``seen`` is not changed)."""
    kept: list[str] = []
    own: set[str] = set()
    dropped = 0
    for sentence in sentences(text):
        key = sentence_key(sentence)
        if key is not None and (key in seen or key in own):
            dropped += 1
            continue
        kept.append(sentence)
        if key is not None:
            own.add(key)
    return " ".join(kept), dropped


def redundancy(texts: Sequence[str], counter: TokenCounter | None = None) -> float:
    """Share of the tokens of ``texts`` (a context's snippets, in order) that sit in sentences repeating a
    sentence seen earlier in them; 0.0 for an empty context. Words are counted without a ``counter``."""
    seen: set[str] = set()
    total = repeated = 0
    for text in texts:
        for sentence in sentences(text):
            cost = counter.count(sentence) if counter is not None else len(_WORD.findall(sentence))
            total += cost
            key = sentence_key(sentence)
            if key is None:
                continue
            if key in seen:
                repeated += cost
            seen.add(key)
    return repeated / total if total else 0.0


def covers(text: str, context_keys: Iterable[str] | set[str], context_text: str) -> bool:
    """Whether ``text`` (an evidence turn, say) is in a context: each of its countable sentences is (by
    key), or, for a text with none, its words appear in order in the context."""
    keys = sentence_keys(text)
    if keys:
        have = context_keys if isinstance(context_keys, set) else set(context_keys)
        return keys <= have
    words = " ".join(_WORD.findall(text.lower()))
    return bool(words) and words in " ".join(_WORD.findall(context_text.lower()))
