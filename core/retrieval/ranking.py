"""Ranking the read path's candidates: which tiers' scores count, fusion, recency, dedupe and MMR."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.models import ScoredSnippet, Tier
from core.retrieval.candidates import Candidate
from core.retrieval.diversity import drop_near_duplicate_texts, mmr_order, text_similarity
from core.retrieval.fusion import apply_recency, rank_keys, rrf_fuse, weighted_fuse
from core.settings import RetrievalSettings

# MMR reorders this many of the best candidates (the part a context budget usually holds).
MMR_HEAD = 20


@dataclass
class TierOutcome:
    """One tier's answer: its candidates, best first, or that it failed (or answered only in part)."""

    name: str
    candidates: list[Candidate] = field(default_factory=list)
    failed: bool = False
    partial: bool = False  # answered, but a part of the tier could not be searched


def fuse_and_diversify(
    outcomes: Sequence[TierOutcome], *, settings: RetrievalSettings, k: int, diversify: bool = True
) -> list[ScoredSnippet]:
    """One ranked list from the tiers' candidates: fused, recency-weighted, near-duplicates dropped, the head
    diversified by MMR; the best ``k``. ``diversify`` False keeps the fused order and every candidate (a
    key-value caller's distinct items may hold equal texts)."""
    cfg = settings
    merged: dict[str, Candidate] = {}
    for outcome in outcomes:
        for cand in outcome.candidates:
            merged[cand.key] = merged[cand.key].merge(cand) if cand.key in merged else cand
    if not merged:
        return []
    scoring = scoring_outcomes(outcomes)
    if cfg.fusion == "rrf":
        fused = rrf_fuse(
            {o.name: [c.key for c in o.candidates] for o in scoring},
            k=cfg.rrf_k,
            weights=cfg.fusion_weights,
        )
    else:
        fused = weighted_fuse(
            {o.name: [(c.key, c.raw_score) for c in o.candidates] for o in scoring},
            weights=cfg.fusion_weights, method=cfg.score_normalisation,
        )  # fmt: skip
    # Buffered turns that no scoring tier ranked (the newest, say) stay on offer, last.
    scored = {o.name for o in scoring}
    for outcome in outcomes:
        if outcome.name not in scored:
            fused.update({c.key: 0.0 for c in outcome.candidates if c.key not in fused})
    if cfg.recency_half_life_s is not None:
        created = {key: c.created_ts for key, c in merged.items()}
        fused = apply_recency(
            fused,
            created,
            now_ts=time.time(),
            half_life_s=cfg.recency_half_life_s,
            weight=cfg.recency_weight,
        )
    order = [key for key in rank_keys(fused) if key in merged]
    if not diversify:
        return [merged[key].to_snippet(fused[key]) for key in order[:k]]
    texts = [merged[key].content for key in order]
    similarity = text_similarity(texts)
    # MMR diversifies the head of the list (the part a context budget usually holds); the tail
    # keeps relevance order. Both steps stay O(head x pool) whatever k is.
    head = min(k, MMR_HEAD) if cfg.mmr_lambda < 1.0 else 0
    kept = drop_near_duplicate_texts(texts, threshold=cfg.dedupe_threshold, limit=k + head)
    chosen = kept[:k]
    if head:
        pool = kept[: 2 * head]
        picked = mmr_order(
            [fused[order[i]] for i in pool],
            lambda a, b: similarity(pool[a], pool[b]),
            lambda_=cfg.mmr_lambda,
            k=head,
        )
        first = [pool[i] for i in picked]
        taken = set(first)
        rest = [i for i in kept if i not in taken]
        chosen = (first + rest)[:k]
    return [merged[order[i]].to_snippet(fused[order[i]]) for i in chosen]


def scoring_outcomes(outcomes: Sequence[TierOutcome]) -> list[TierOutcome]:
    """The tiers whose scores are fused. Every buffered turn is already durable in Postgres (the buffer
    is written after the commit), so while the episodic tier answers, the working tier's overlap score
    would count the same lexical evidence twice for the newest turns only: a recency boost that
    ``recency_half_life_s`` does not control (LoCoMo recall@10 75.7 with it, 78.5 without). It still
    offers its turns as candidates, and scores them when the episodic tier is down or not asked for.
    """
    if any(o.name == Tier.EPISODIC.value for o in outcomes):
        return [o for o in outcomes if o.name != Tier.WORKING.value]
    return list(outcomes)


def score_stats(scores: Sequence[float]) -> tuple[float | None, float | None]:
    """Top score and spread (top minus the lowest returned) of a result list."""
    if not scores:
        return None, None
    return max(scores), max(scores) - min(scores)
