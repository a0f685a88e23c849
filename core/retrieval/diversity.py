"""Near-duplicate removal and maximal marginal relevance (MMR) over fused candidates.

Similarity is lexical by default (Jaccard over word shingles, no model call on the query path); when
candidates carry vectors, cosine similarity can be passed in instead.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache

_WORD = re.compile(r"\w+", re.UNICODE)

Similarity = Callable[[int, int], float]


SHINGLE_CACHE_SIZE = 4_096  # texts; a query's candidates recur across queries on the same memories


def shingles(text: str, n: int = 2) -> frozenset[str]:
    """Lower-cased word n-grams (single words for texts shorter than ``n``); cached per text."""
    return _indexed_shingles(text, n)[0]


@lru_cache(maxsize=SHINGLE_CACHE_SIZE)
def _indexed_shingles(text: str, n: int) -> tuple[frozenset[str], tuple[str, ...]]:
    """The shingle set and the same shingles in a stable order (prefix filtering needs both)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        grams = frozenset(words)
    else:
        grams = frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    # A stable order (not Python's salted hash) so results never vary between processes.
    return grams, tuple(sorted(grams, key=lambda g: (zlib.crc32(g.encode()), g)))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 0.0
    return dot / (na * nb)


def text_similarity(texts: Sequence[str], n: int = 2, *, floor: float | None = None) -> Similarity:
    """A pairwise similarity over ``texts`` (Jaccard of word shingles), shingles computed lazily.

    With ``floor``, a pair whose shingle counts differ too much to reach it (Jaccard <= min/max size)
    scores 0 without comparing the sets: near-duplicate checks then cost O(1) for most pairs.
    """
    cache: dict[int, frozenset[str]] = {}

    def shingled(i: int) -> frozenset[str]:  # lazily: dedupe and MMR look at the top few only
        if i not in cache:
            cache[i] = shingles(texts[i], n)
        return cache[i]

    def similarity(i: int, j: int) -> float:
        a, b = shingled(i), shingled(j)
        if floor is not None and a and b and min(len(a), len(b)) < floor * max(len(a), len(b)):
            return 0.0
        return jaccard(a, b)

    return similarity


def vector_similarity(vectors: Sequence[Sequence[float]]) -> Similarity:
    return lambda i, j: cosine(vectors[i], vectors[j])


def drop_near_duplicates(
    n_items: int, similarity: Similarity, *, threshold: float, limit: int | None = None
) -> list[int]:
    """Indices to keep, in order: an item is dropped when it is at least ``threshold`` similar to an
    item kept before it (items are given best first, so the better copy survives). Stops once ``limit``
    items are kept, so the cost is O(limit x items seen), not O(items²)."""
    kept: list[int] = []
    for i in range(n_items):
        if limit is not None and len(kept) >= limit:
            break
        if all(similarity(i, j) < threshold for j in kept):
            kept.append(i)
    return kept


def drop_near_duplicate_texts(
    texts: Sequence[str], *, threshold: float, limit: int | None = None, n: int = 2
) -> list[int]:
    """:func:`drop_near_duplicates` with Jaccard over word shingles, same result, without comparing
    every pair: prefix filtering (Chaudhuri et al., ICDE 2006). Under one global order of shingles,
    two sets with Jaccard >= t share at least one of the first ``|x| - ceil(t * |x|) + 1`` shingles of
    each, so an item is only compared with kept items whose prefixes share a shingle with its own.
    At the default threshold (0.95) a prefix is one or two shingles: the cost is about linear."""
    if threshold <= 0:
        return [0] if texts and (limit is None or limit > 0) else []
    kept: list[int] = []
    sets: dict[int, frozenset[str]] = {}
    by_prefix: dict[str, list[int]] = {}
    empty_kept = False
    for i, text in enumerate(texts):
        if limit is not None and len(kept) >= limit:
            break
        shingled, ordered = _indexed_shingles(text, n)
        if not shingled:  # Jaccard(empty, empty) = 1: one empty text survives
            if not empty_kept:
                kept.append(i)
                empty_kept = True
            continue
        prefix = ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1]
        seen: set[int] = set()
        duplicate = False
        for gram in prefix:
            for j in by_prefix.get(gram, ()):
                if j not in seen:
                    seen.add(j)
                    if jaccard(shingled, sets[j]) >= threshold:
                        duplicate = True
                        break
            if duplicate:
                break
        if duplicate:
            continue
        kept.append(i)
        sets[i] = shingled
        for gram in prefix:
            by_prefix.setdefault(gram, []).append(i)
    return kept


def mmr_order(
    relevance: Sequence[float],
    similarity: Similarity,
    *,
    lambda_: float,
    k: int | None = None,
) -> list[int]:
    """MMR selection: repeatedly take ``argmax lambda*rel(i) - (1-lambda)*max_sim(i, selected)``.

    Relevance is min-max normalised first so that lambda means the same whatever the score scale.
    ``lambda_ = 1`` returns plain relevance order.
    """
    n = len(relevance)
    limit = n if k is None else min(k, n)
    if n == 0 or limit <= 0:
        return []
    lo, hi = min(relevance), max(relevance)
    span = hi - lo
    rel = [1.0 if span <= 1e-12 else (r - lo) / span for r in relevance]
    selected: list[int] = []
    max_sim = [0.0] * n
    remaining = set(range(n))
    while remaining and len(selected) < limit:
        best = max(remaining, key=lambda i: (lambda_ * rel[i] - (1 - lambda_) * max_sim[i], -i))
        selected.append(best)
        remaining.discard(best)
        for i in remaining:
            max_sim[i] = max(max_sim[i], similarity(i, best))
    return selected
