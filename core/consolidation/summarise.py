"""Session-window summaries: an extractive summariser (no model needed) and an Ollama-compatible LLM one.

A summary covers one session's turns inside one time window. The extractive summariser picks the turns
that carry the window's most frequent content words, in time order, so it is deterministic (a rerun
produces the same text). The LLM summariser asks an Ollama ``/api/generate`` endpoint and falls back to
the extractive one when the endpoint fails, so an LLM outage never stops consolidation.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from core.retrieval.quality import content_words

log = logging.getLogger(__name__)

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class SummaryTurn:
    """One turn as a summariser sees it: who spoke (may be empty) and what was said."""

    speaker: str
    text: str

    def render(self) -> str:
        return f"{self.speaker}: {self.text}" if self.speaker else self.text


class Summariser(Protocol):
    """Turns one session window into a short text."""

    async def summarise(self, turns: Sequence[SummaryTurn]) -> str: ...


class ExtractiveSummariser:
    """Picks the ``max_sentences`` sentences richest in the window's frequent content words, in order."""

    def __init__(self, *, max_sentences: int = 4, max_chars: int = 1200) -> None:
        if max_sentences < 1 or max_chars < 1:
            raise ValueError("max_sentences and max_chars must be >= 1")
        self._max_sentences = max_sentences
        self._max_chars = max_chars

    def summarise_sync(self, turns: Sequence[SummaryTurn]) -> str:
        sentences: list[tuple[str, str]] = []  # (speaker, sentence)
        for turn in turns:
            for sentence in _SENTENCE.split(turn.text.strip()):
                if sentence.strip():
                    sentences.append((turn.speaker, sentence.strip()))
        if not sentences:
            return ""
        freq = Counter(w for _, s in sentences for w in set(content_words(s)))

        def score(item: tuple[int, tuple[str, str]]) -> tuple[float, int]:
            pos, (_, sentence) = item
            words = set(content_words(sentence))
            # Mean frequency of its words, so long sentences do not win by length alone; earlier on ties.
            value = sum(freq[w] for w in words) / (len(words) ** 0.5) if words else 0.0
            return (-value, pos)

        chosen = sorted(sorted(enumerate(sentences), key=score)[: self._max_sentences])
        parts: list[str] = []
        last_speaker: str | None = None
        for _, (speaker, sentence) in chosen:
            parts.append(f"{speaker}: {sentence}" if speaker and speaker != last_speaker else sentence)
            last_speaker = speaker
        return " ".join(parts)[: self._max_chars]

    async def summarise(self, turns: Sequence[SummaryTurn]) -> str:
        # Pure-Python and small (one window): cheaper inline than a thread hop.
        return self.summarise_sync(turns)


class OllamaSummariser:
    """Summaries from an Ollama-compatible ``POST /api/generate``; extractive fallback on any failure.

    Borrows its ``httpx.AsyncClient``; never closes it.
    """

    PROMPT = (
        "Summarise this conversation excerpt in at most three sentences. Keep names, dates, numbers and "
        "decisions. Answer with the summary only.\n\n{turns}"
    )

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        timeout_s: float = 30.0,
        fallback: Summariser | None = None,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/generate"
        self._model = model
        self._timeout_s = timeout_s
        self._fallback = fallback or ExtractiveSummariser()
        self.fallbacks = 0

    async def summarise(self, turns: Sequence[SummaryTurn]) -> str:
        prompt = self.PROMPT.format(turns="\n".join(t.render() for t in turns))
        body = {"model": self._model, "prompt": prompt, "stream": False, "options": {"temperature": 0}}
        try:
            resp = await self._client.post(self._url, json=body, timeout=self._timeout_s)
            resp.raise_for_status()
            text = str(resp.json().get("response", "")).strip()
            if text:
                return text
            log.warning("llm summariser returned an empty summary; using extractive")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("llm summariser failed (%s); using extractive", type(exc).__name__)
        self.fallbacks += 1
        return await self._fallback.summarise(turns)
