"""Fusion: RRF and weighted score fusion, recency decay."""

from __future__ import annotations

import pytest

from core.retrieval.fusion import (
    apply_recency,
    normalise_scores,
    rank_keys,
    recency_factor,
    rrf_fuse,
    weighted_fuse,
)


def test_rrf_rewards_agreement_between_sources() -> None:
    fused = rrf_fuse({"vector": ["a", "b", "c"], "lexical": ["d", "b", "e"]}, k=60)
    assert rank_keys(fused)[0] == "b"  # rank 2 in both beats rank 1 in one
    assert fused["b"] == pytest.approx(2 / 62)
    assert fused["e"] == pytest.approx(1 / 63)


def test_rrf_counts_a_key_once_per_source_and_honours_weights() -> None:
    fused = rrf_fuse({"vector": ["a", "a", "b"], "lexical": ["b"]}, k=1, weights={"lexical": 0.0})
    assert fused == {"a": pytest.approx(1 / 2), "b": pytest.approx(1 / 3)}


def test_normalise_minmax_and_zscore_bounds() -> None:
    assert normalise_scores([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert normalise_scores([5.0, 5.0]) == [1.0, 1.0]
    z = normalise_scores([1.0, 2.0, 10.0], "zscore")
    assert all(0 < v < 1 for v in z) and z[2] > z[1] > z[0]
    assert normalise_scores([], "zscore") == []


def test_weighted_fusion_keeps_score_gaps_that_rrf_discards() -> None:
    scored = {
        "vector": [("a", 0.90), ("b", 0.89), ("c", 0.10)],
        "lexical": [("c", 12.0), ("b", 11.9), ("a", 0.5)],
    }
    fused = weighted_fuse(scored, weights={"vector": 1.0, "lexical": 1.0})
    assert rank_keys(fused)[0] == "b"
    only_vector = weighted_fuse(scored, weights={"vector": 1.0, "lexical": 0.0})
    assert rank_keys(only_vector) == ["a", "b", "c"]


def test_recency_factor_halves_every_half_life() -> None:
    assert recency_factor(0.0, now_ts=100.0, half_life_s=50.0) == pytest.approx(0.25)
    assert recency_factor(None, now_ts=100.0, half_life_s=50.0) == 1.0
    assert recency_factor(0.0, now_ts=100.0, half_life_s=None) == 1.0
    assert recency_factor(200.0, now_ts=100.0, half_life_s=50.0) == 1.0  # future clock skew: no boost


def test_apply_recency_demotes_old_items_without_erasing_them() -> None:
    fused = {"old": 1.0, "new": 0.8}
    out = apply_recency(fused, {"old": 0.0, "new": 1000.0}, now_ts=1000.0, half_life_s=10.0, weight=0.5)
    assert rank_keys(out) == ["new", "old"]
    assert out["old"] == pytest.approx(0.5, abs=1e-6)
    assert apply_recency(fused, {}, now_ts=0.0, half_life_s=None) == fused
