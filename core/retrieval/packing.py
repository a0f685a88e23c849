"""Token-budgeted context assembly: pick the highest-value snippets that fit, render them, count them.

Guarantees: the rendered context counts at most ``token_budget`` tokens with the configured tokenizer
(checked on the final string, not just summed), and a snippet whose content was cut carries
``truncated=True`` and ends with an ellipsis in the rendered text.

Currency: a snippet superseded by another candidate is not packed (only the current version is); a
snippet's line shows its time, and its validity and supersession when it has them.

No repetition (``dedupe``, on by default): a sentence already packed is not packed again (see
core.retrieval.repeats; a snippet that loses sentences says how many in ``metadata["repeats_dropped"]``,
one that would be left empty is skipped), so a session summary and the turns it was built from are
never both packed in full. A summary that paraphrases (an LLM's; consolidation marks each summary's
``metadata["extractive"]``) shares no sentence with its turns; then the source ids decide: a turn a
packed summary was built from, or a summary of turns already packed, is packed only when it adds query
words the packed text lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.models import ScoredSnippet
from core.retrieval.quality import content_words
from core.retrieval.repeats import sentence_keys, without_repeats
from core.retrieval.tokens import TokenCounter

SEPARATOR = "\n"
ELLIPSIS = " …"


def _when(ts: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return (ts.astimezone(UTC) if ts.tzinfo is not None else ts).strftime(fmt)


def render_snippet(snippet: ScoredSnippet) -> str:
    """One context line: ``[YYYY-MM-DD HH:MM] content`` (the timestamp helps temporal questions), with the
    snippet's currency when it has one: ``[... | valid 2024-01-01 to 2024-06-01 | superseded 2024-05-02]``."""
    parts = [] if snippet.created_at is None else [_when(snippet.created_at)]
    if snippet.valid_from is not None or snippet.valid_to is not None:
        start = "" if snippet.valid_from is None else f" from {_when(snippet.valid_from, '%Y-%m-%d')}"
        end = "" if snippet.valid_to is None else f" to {_when(snippet.valid_to, '%Y-%m-%d')}"
        parts.append(f"valid{start}{end}")
    if snippet.superseded_at is not None:
        parts.append(f"superseded {_when(snippet.superseded_at, '%Y-%m-%d')}")
    return f"[{' | '.join(parts)}] {snippet.content}" if parts else snippet.content


@dataclass(frozen=True, slots=True)
class PackedContext:
    """Snippets kept (each with its token cost), the rendered context and its exact token count."""

    snippets: list[ScoredSnippet]
    text: str
    tokens_used: int


def _chronological_key(item: tuple[int, ScoredSnippet]) -> tuple[int, datetime, int]:
    rank, snippet = item
    if snippet.created_at is None:
        return (1, datetime.min.replace(tzinfo=UTC), rank)
    ts = snippet.created_at if snippet.created_at.tzinfo else snippet.created_at.replace(tzinfo=UTC)
    return (0, ts, rank)


_COUNT_BLOCK = 16


def _is_summary(snippet: ScoredSnippet) -> bool:
    return snippet.metadata.get("record_type") == "summary" or snippet.kind == "summary"


def _paraphrase(snippet: ScoredSnippet) -> bool:
    """A summary that consolidation marked as not copying its turns' sentences (an LLM's). An extractive
    summary copies a few of its window's sentences: the sentence rule covers it, and its source ids
    (every turn of the window) do not say which turns it holds."""
    return _is_summary(snippet) and snippet.metadata.get("extractive") is False


class _Repeats:
    """What the snippets packed so far hold: sentence keys, words, and the turns packed summaries cover."""

    def __init__(self, query: str | None) -> None:
        self.query_words = set(content_words(query)) if query else set()
        self.keys: set[str] = set()
        self.words: set[str] = set()
        self.covered: set[str] = set()  # source ids of packed (whole) summaries
        self.packed: set[str] = set()  # own ids of packed snippets

    def adds_query_words(self, snippet: ScoredSnippet) -> bool:
        return bool((self.query_words & set(content_words(snippet.content))) - self.words)

    def strip(self, snippet: ScoredSnippet) -> ScoredSnippet | None:
        """The snippet without what is packed already; None when it would add nothing."""
        content, dropped = without_repeats(snippet.content, self.keys)
        if dropped and not content.strip():
            return None
        if not dropped:
            own = snippet.source_ids[:1]
            if _paraphrase(snippet):
                overlaps = bool(self.packed & set(snippet.source_ids[1:]))
            else:
                overlaps = bool(own) and own[0] in self.covered
            if overlaps and not self.adds_query_words(snippet):
                return None
            return snippet
        metadata = {**snippet.metadata, "repeats_dropped": dropped}
        return snippet.model_copy(update={"content": content, "metadata": metadata})

    def add(self, snippet: ScoredSnippet) -> None:
        self.keys |= sentence_keys(snippet.content)
        self.words |= set(content_words(snippet.content))
        self.packed.update(snippet.source_ids[:1])
        if _paraphrase(snippet) and not snippet.truncated:
            self.covered.update(snippet.source_ids[1:])


def pack_context(
    ranked: Sequence[ScoredSnippet],
    *,
    token_budget: int,
    counter: TokenCounter,
    tier_quotas: Mapping[str, int] | None = None,
    chronological: bool = False,
    allow_truncation: bool = True,
    min_partial_tokens: int = 16,
    render: Callable[[ScoredSnippet], str] = render_snippet,
    query: str | None = None,
    dedupe: bool = True,
) -> PackedContext:
    """Greedy packing of ``ranked`` (best first) under ``token_budget``.

    A snippet that does not fit whole is skipped, except that one snippet may be cut to fill the rest
    of the budget when at least ``min_partial_tokens`` remain. ``tier_quotas`` caps the tokens any one
    tier may take (keys are tier names). ``chronological`` orders the kept snippets by time. ``dedupe``
    leaves out what is packed already (the module docstring); ``query`` is the question it weighs
    summaries against their turns by.
    """
    if token_budget <= 0 or not ranked:
        return PackedContext(snippets=[], text="", tokens_used=0)
    sep_cost = counter.count(SEPARATOR.strip()) if SEPARATOR.strip() else 0
    # Rendered and counted lazily, a block at a time: a budget usually fills long before the end of
    # the list, and the tokenizer is the costliest step of the query path after the stores.
    lines: list[str] = []
    costs: list[int] = []

    def line_and_cost(rank: int) -> tuple[str, int]:
        if rank >= len(costs):
            block = [render(s) for s in ranked[len(costs) : rank + _COUNT_BLOCK]]
            lines.extend(block)
            costs.extend(counter.count_many(block))
        return lines[rank], costs[rank]

    # A snippet whose successor (what superseded it) is among the candidates is never packed beside it.
    replaced = {s.source_ids[0] for s in ranked if s.source_ids}
    used = 0
    by_tier: dict[str, int] = {}
    chosen: list[tuple[int, ScoredSnippet, str]] = []
    cut_done = False
    repeats = _Repeats(query) if dedupe else None
    for rank, original in enumerate(ranked):
        overhead = sep_cost if chosen else 0
        room = token_budget - used - overhead
        if room <= 0:
            break  # the budget is spent: no later snippet can fit, whatever its tier
        if original.superseded_by is not None and original.superseded_by in replaced:
            continue
        tier = str(original.tier)
        if tier_quotas is not None and tier in tier_quotas:
            room = min(room, tier_quotas[tier] - by_tier.get(tier, 0))
        if room <= 0:
            continue
        snippet = original
        if repeats is not None:
            stripped = repeats.strip(original)
            if stripped is None:
                continue
            snippet = stripped
        if snippet is original:
            line, cost = line_and_cost(rank)
        else:
            line = render(snippet)
            cost = counter.count(line)
        if cost <= room:
            chosen.append((rank, snippet.model_copy(update={"token_count": cost}), line))
            used += cost + overhead
            by_tier[tier] = by_tier.get(tier, 0) + cost
            if repeats is not None:
                repeats.add(snippet)
            continue
        if not allow_truncation or cut_done or room < min_partial_tokens:
            continue
        cut = _cut_snippet(snippet, room=room, counter=counter, render=render)
        if cut is None:
            continue
        cut_snippet, cut_line, cut_cost = cut
        chosen.append((rank, cut_snippet, cut_line))
        used += cut_cost + overhead
        by_tier[tier] = by_tier.get(tier, 0) + cut_cost
        cut_done = True
        if repeats is not None:
            repeats.add(cut_snippet)
    return _finalise(chosen, token_budget=token_budget, counter=counter, chronological=chronological)


def _cut_snippet(
    snippet: ScoredSnippet, *, room: int, counter: TokenCounter, render: Callable[[ScoredSnippet], str]
) -> tuple[ScoredSnippet, str, int] | None:
    """The snippet with its content cut so that its rendered line (with ellipsis) fits ``room`` tokens."""
    prefix_cost = counter.count(render(snippet.model_copy(update={"content": ""})))
    marker_cost = counter.count(ELLIPSIS)
    allowed = room - prefix_cost - marker_cost
    while allowed > 0:
        content = counter.truncate(snippet.content, allowed)
        if not content:
            return None
        cut = snippet.model_copy(update={"content": content + ELLIPSIS, "truncated": True})
        line = render(cut)
        cost = counter.count(line)
        if cost <= room:
            return cut.model_copy(update={"token_count": cost}), line, cost
        allowed -= max(1, cost - room)
    return None


def _finalise(
    chosen: list[tuple[int, ScoredSnippet, str]],
    *,
    token_budget: int,
    counter: TokenCounter,
    chronological: bool,
) -> PackedContext:
    """Order, render and verify; drop the lowest-ranked snippet while the exact count is over budget."""
    while chosen:
        ordered = chosen
        if chronological:
            keyed = sorted(((rank, s) for rank, s, _ in chosen), key=_chronological_key)
            lines = {rank: line for rank, _, line in chosen}
            ordered = [(rank, s, lines[rank]) for rank, s in keyed]
        text = SEPARATOR.join(line for _, _, line in ordered)
        tokens = counter.count_once(text)
        if tokens <= token_budget:
            return PackedContext(snippets=[s for _, s, _ in ordered], text=text, tokens_used=tokens)
        worst = max(range(len(chosen)), key=lambda i: chosen[i][0])
        chosen = chosen[:worst] + chosen[worst + 1 :]
    return PackedContext(snippets=[], text="", tokens_used=0)


def created_ts(snippet: ScoredSnippet) -> float | None:
    """Epoch seconds of a snippet's timestamp (naive timestamps are taken as UTC)."""
    if snippet.created_at is None:
        return None
    ts = snippet.created_at if snippet.created_at.tzinfo else snippet.created_at.replace(tzinfo=UTC)
    return ts.timestamp()
