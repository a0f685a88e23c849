"""Near-duplicate removal and MMR."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from core.retrieval.diversity import (
    cosine,
    drop_near_duplicate_texts,
    drop_near_duplicates,
    jaccard,
    mmr_order,
    shingles,
    text_similarity,
    vector_similarity,
)


def test_shingles_and_jaccard() -> None:
    a = shingles("The cat sat on the mat")
    assert "cat sat" in a
    assert jaccard(a, shingles("the CAT sat on the mat!")) == 1.0
    assert jaccard(a, shingles("dogs bark loudly")) == 0.0
    assert shingles("one") == frozenset({"one"})


def test_near_duplicates_keep_the_better_copy() -> None:
    texts = [
        "Caroline went to the LGBTQ support group yesterday",
        "caroline went to the LGBTQ support group yesterday!",
        "Melanie painted a sunrise in 2022",
    ]
    kept = drop_near_duplicates(len(texts), text_similarity(texts), threshold=0.9)
    assert kept == [0, 2]
    assert drop_near_duplicates(len(texts), text_similarity(texts), threshold=1.01) == [0, 1, 2]


def test_mmr_lambda_one_is_relevance_order() -> None:
    rel = [0.9, 0.8, 0.7]
    sim = vector_similarity([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mmr_order(rel, sim, lambda_=1.0) == [0, 1, 2]


def test_mmr_promotes_a_diverse_item_over_a_redundant_one() -> None:
    rel = [0.9, 0.85, 0.7]
    sim = vector_similarity([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    assert mmr_order(rel, sim, lambda_=0.5) == [0, 2, 1]
    assert mmr_order(rel, sim, lambda_=0.5, k=2) == [0, 2]
    assert mmr_order([], sim, lambda_=0.5) == []


def test_cosine_handles_zero_vectors() -> None:
    assert cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert abs(cosine([1.0, 1.0], [2.0, 2.0]) - 1.0) < 1e-9


def test_dedupe_stops_at_the_limit_without_looking_further() -> None:
    seen: list[tuple[int, int]] = []

    def sim(i: int, j: int) -> float:
        seen.append((i, j))
        return 0.0

    assert drop_near_duplicates(1000, sim, threshold=0.9, limit=3) == [0, 1, 2]
    assert max(max(pair) for pair in seen) == 2


def test_floor_skips_pairs_too_different_in_size_to_be_duplicates() -> None:
    texts = ["a b c d e f g h i j", "a b c d e f g h i j k", "a b c"]
    plain = text_similarity(texts)
    floored = text_similarity(texts, floor=0.9)
    assert floored(0, 1) == plain(0, 1) > 0.85  # similar sizes: the real Jaccard
    assert plain(0, 2) > 0 and floored(0, 2) == 0.0  # 2 vs 9 bigrams can never reach 0.9


_words = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=0, max_size=9)


@settings(max_examples=300, deadline=None)
@given(
    bases=st.lists(_words, min_size=1, max_size=6),
    picks=st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.sampled_from(["a", "z"])), max_size=30),
    threshold=st.sampled_from([0.3, 0.5, 0.8, 0.9, 0.95, 1.0]),
    limit=st.one_of(st.none(), st.integers(0, 12)),
)
def test_prefix_filtered_dedupe_equals_the_pairwise_one(
    bases: list[list[str]], picks: list[tuple[int, bool, str]], threshold: float, limit: int | None
) -> None:
    """Near-duplicates made by small edits of a few base texts: same kept indices as the O(n^2) scan."""
    texts = [" ".join(b) for b in bases]
    for base, edit, word in picks:
        words = list(bases[base % len(bases)])
        texts.append(" ".join([*words, word] if edit else words))
    want = drop_near_duplicates(len(texts), text_similarity(texts), threshold=threshold, limit=limit)
    assert drop_near_duplicate_texts(texts, threshold=threshold, limit=limit) == want


def test_shingles_are_cached_per_text_and_keep_a_stable_order() -> None:
    from core.retrieval import diversity

    text = "The user booked the hotel near the station for the conference"
    first = diversity._indexed_shingles(text, 2)
    hits = diversity._indexed_shingles.cache_info().hits
    assert diversity._indexed_shingles(text, 2) is first
    assert diversity._indexed_shingles.cache_info().hits == hits + 1
    grams, ordered = first
    assert grams == shingles(text) and set(ordered) == grams and len(ordered) == len(grams)
    assert list(ordered) == sorted(grams, key=lambda g: (zlib.crc32(g.encode()), g))
    assert diversity._indexed_shingles.cache_info().maxsize == diversity.SHINGLE_CACHE_SIZE
