"""Context packing: the token budget is never exceeded; a cut snippet always says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import ScoredSnippet, Tier
from core.retrieval.packing import ELLIPSIS, pack_context
from core.retrieval.tokens import HFTokenCounter, load_token_counter

COUNTER: HFTokenCounter = load_token_counter()
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
WORDS = ["memory", "agent", "Caroline", "support", "group", "sunrise", "painted", "2023", "—", "über", "x"]


def _snippet(i: int, n_words: int, tier: Tier = Tier.SEMANTIC, *, dated: bool = True) -> ScoredSnippet:
    content = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n_words)) or "empty"
    return ScoredSnippet(
        tier=tier,
        content=f"s{i} {content}",
        score=1.0 / (i + 1),
        source_ids=[f"id-{i}"],
        created_at=T0 + timedelta(minutes=(7 * i) % 13) if dated else None,
    )


snippet_sizes = st.lists(st.integers(min_value=0, max_value=120), min_size=0, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=snippet_sizes,
    budget=st.integers(min_value=0, max_value=600),
    chronological=st.booleans(),
    tiers=st.lists(st.sampled_from(list(Tier)), min_size=25, max_size=25),
    quota=st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
)
def test_budget_never_exceeded_and_cuts_are_flagged(
    sizes: list[int], budget: int, chronological: bool, tiers: list[Tier], quota: int | None
) -> None:
    ranked = [_snippet(i, n, tiers[i], dated=i % 4 != 3) for i, n in enumerate(sizes)]
    quotas = None if quota is None else {"working": quota}
    packed = pack_context(
        ranked, token_budget=budget, counter=COUNTER, tier_quotas=quotas, chronological=chronological
    )
    assert packed.tokens_used <= budget
    assert packed.tokens_used == COUNTER.count(packed.text)
    originals = {s.source_ids[0]: s for s in ranked}
    for s in packed.snippets:
        original = originals[s.source_ids[0]]
        assert s.token_count is not None
        if s.content != original.content:
            assert s.truncated, "a snippet was cut without saying so"
            assert s.content.endswith(ELLIPSIS)
            assert original.content.startswith(s.content[: -len(ELLIPSIS)])
        else:
            assert not s.truncated
    if quotas is not None:
        used_working = sum(s.token_count or 0 for s in packed.snippets if s.tier == Tier.WORKING)
        assert used_working <= quotas["working"]
    if chronological:
        dated = [s.created_at for s in packed.snippets if s.created_at is not None]
        assert dated == sorted(dated)


def test_highest_ranked_first_and_whole_when_room() -> None:
    ranked = [_snippet(i, 10) for i in range(5)]
    packed = pack_context(ranked, token_budget=10_000, counter=COUNTER)
    assert [s.source_ids[0] for s in packed.snippets] == [f"id-{i}" for i in range(5)]
    assert not any(s.truncated for s in packed.snippets)
    assert "[2023-05-08 " in packed.text


def test_a_long_snippet_is_cut_to_fill_the_budget_and_flagged() -> None:
    ranked = [_snippet(0, 400)]
    packed = pack_context(ranked, token_budget=50, counter=COUNTER)
    assert len(packed.snippets) == 1
    assert packed.snippets[0].truncated
    assert 16 <= packed.tokens_used <= 50
    no_cut = pack_context(ranked, token_budget=50, counter=COUNTER, allow_truncation=False)
    assert no_cut.snippets == [] and no_cut.text == "" and no_cut.tokens_used == 0


def test_tokenizer_counts_without_special_tokens() -> None:
    assert COUNTER.count("") == 0
    assert COUNTER.count("hello world") == 2
    assert COUNTER.count_many(["hello", "hello world"]) == [1, 2]
    assert COUNTER.truncate("hello brave new world", 2) == "hello brave"


def test_counts_are_cached_and_the_cache_is_bounded() -> None:
    from tokenizers import Tokenizer

    from core.retrieval.tokens import default_tokenizer_path

    counter = HFTokenCounter(Tokenizer.from_file(str(default_tokenizer_path())), cache_size=2)
    texts = ["the user booked a flight", "the hotel refund arrived", "a third memory"]
    first = counter.count_many(texts)
    assert first == [len(counter._tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert counter.count_many(texts[1:]) == first[1:]
    info = counter.cache_info()
    assert (info.hits, info.misses, info.currsize) == (2, 3, 2)
    assert counter.count(texts[0]) == first[0]  # evicted, counted again, same answer
    assert counter.cache_info().misses == 4


def test_one_off_texts_stay_out_of_the_count_cache() -> None:
    """The rendered context and truncated prefixes are unique per request: caching them would fill the
    LRU with texts never asked for again (the Retriever's RSS grew with every /v1/context)."""
    from tokenizers import Tokenizer

    from core.retrieval.tokens import default_tokenizer_path

    counter = HFTokenCounter(Tokenizer.from_file(str(default_tokenizer_path())), cache_size=64)
    assert counter.count_once("hello brave new world") == 4
    assert counter.count_once("") == 0
    assert counter.truncate("hello brave new world, a longer text to cut", 3) == "hello brave new"
    snippets = [_snippet(i, 6) for i in range(5)]
    packed = pack_context(snippets, token_budget=400, counter=counter)
    assert len(packed.snippets) == 5 and packed.tokens_used == counter.count_once(packed.text)
    cached = counter.cache_info().currsize
    again = pack_context(snippets[::-1], token_budget=400, counter=counter)
    assert again.text != packed.text  # another context from the same lines: nothing new to cache
    assert counter.cache_info().currsize == cached
