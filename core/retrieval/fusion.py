"""Fusion of ranked lists from several retrieval sources, and recency decay.

Two methods, chosen by ``RetrievalSettings.fusion``:

- ``rrf``: reciprocal rank fusion, ``sum_s w_s / (k + rank_s)``; needs no score calibration.
- ``weighted``: each source's scores are normalised to [0, 1] (min-max over the list, or a z-score
  squashed by a logistic), then summed with per-source weights; keeps score gaps that RRF discards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Normalisation = Literal["minmax", "zscore"]


def rrf_fuse(
    ranked: Mapping[str, Sequence[str]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Reciprocal rank fusion of ranked key lists (best first); returns key -> fused score."""
    fused: dict[str, float] = {}
    for source, keys in ranked.items():
        weight = 1.0 if weights is None else weights.get(source, 1.0)
        if weight == 0:
            continue
        seen: set[str] = set()
        rank = 0
        for key in keys:
            if key in seen:  # a key counts once per source, at its best rank
                continue
            seen.add(key)
            rank += 1
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return fused


def normalise_scores(scores: Sequence[float], method: Normalisation = "minmax") -> list[float]:
    """Map one source's raw scores to [0, 1] so that sources with different scales can be summed."""
    if not scores:
        return []
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        if hi - lo <= 1e-12:
            return [1.0 for _ in scores]
        return [(s - lo) / (hi - lo) for s in scores]
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / len(scores)
    std = math.sqrt(var)
    if std <= 1e-12:
        return [0.5 for _ in scores]
    return [1.0 / (1.0 + math.exp(-(s - mean) / std)) for s in scores]


def weighted_fuse(
    scored: Mapping[str, Sequence[tuple[str, float]]],
    *,
    weights: Mapping[str, float] | None = None,
    method: Normalisation = "minmax",
) -> dict[str, float]:
    """Weighted sum of per-source normalised scores; a key absent from a source gets 0 from it."""
    fused: dict[str, float] = {}
    for source, pairs in scored.items():
        weight = 1.0 if weights is None else weights.get(source, 1.0)
        if weight == 0 or not pairs:
            continue
        best: dict[str, float] = {}
        for key, score in pairs:
            if key not in best or score > best[key]:
                best[key] = score
        keys = list(best)
        norm = normalise_scores([best[key] for key in keys], method)
        for key, value in zip(keys, norm, strict=True):
            fused[key] = fused.get(key, 0.0) + weight * value
    return fused


def recency_factor(created_ts: float | None, *, now_ts: float, half_life_s: float | None) -> float:
    """Exponential decay ``0.5 ** (age / half_life)``; 1.0 when decay is off or the age is unknown."""
    if half_life_s is None or created_ts is None:
        return 1.0
    age = max(0.0, now_ts - created_ts)
    return float(0.5 ** (age / half_life_s))


def apply_recency(
    fused: Mapping[str, float],
    created: Mapping[str, float | None],
    *,
    now_ts: float,
    half_life_s: float | None,
    weight: float = 0.3,
) -> dict[str, float]:
    """Blend recency into fused scores: ``score * ((1 - weight) + weight * decay)``.

    A blend, not a plain product, so an old but highly relevant item is demoted, never erased.
    """
    if half_life_s is None or weight == 0:
        return dict(fused)
    out: dict[str, float] = {}
    for key, score in fused.items():
        decay = recency_factor(created.get(key), now_ts=now_ts, half_life_s=half_life_s)
        out[key] = score * ((1.0 - weight) + weight * decay)
    return out


def rank_keys(fused: Mapping[str, float]) -> list[str]:
    """Keys by descending fused score; ties broken by key for a deterministic order."""
    return sorted(fused, key=lambda key: (-fused[key], key))
