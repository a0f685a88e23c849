"""Lexical search inside the semantic engine, run against every VectorIndex backend: BM25 sparse vectors
with IDF applied by the engine over the tenant's own points, one call for the dense and lexical lists,
term updates, and congruence of the embedded engine with qdrant-client (which speaks the server's API).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.models import VectorHit, VectorPoint
from core.ports import VectorIndex
from core.retrieval.bm25_sparse import Bm25Sparse
from tests.contract.test_vector_index import (
    BACKENDS,
    V1,
    _close,
    _open,
    index,  # noqa: F401 (the backend-parametrised fixture)
    point,
    qdrant_settings,
    unit,
)

BM25 = Bm25Sparse(k1=0.9, b=0.4, avg_len=16, neighbour_weight=0.5)


def text_point(tenant: str, source: str, text: str, seed: int, neighbours: Sequence[str] = ()) -> VectorPoint:
    p = point(tenant, source, unit(seed), content=text)
    return p.model_copy(update={"sparse": BM25.document(text, neighbours)})


async def test_lexical_matches_come_from_the_engine_with_the_tenants_idf(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    assert await index.lexical_ready()
    docs = {
        "allergy": "The user is allergic to peanuts.",
        "flight": "The flight to Lisbon leaves at noon.",
        "hotel": "The hotel near the station costs 150 EUR.",
        "other": "Nothing about travel here.",
    }
    await index.upsert([text_point("t-a", k, v, i) for i, (k, v) in enumerate(docs.items())])
    terms = BM25.query("when does the flight leave?")
    dense, lexical = await index.search_hybrid(unit(99), terms, tenant_id="t-a", k=3)
    assert len(dense) == 3
    assert [h.payload["record_id"] for h in lexical] == ["flight"]  # only it shares a term
    before = lexical[0].score
    # Another tenant's text full of the same terms must not move tenant A's IDF (nor show up).
    await index.upsert([text_point("t-b", f"b{i}", "flight flight leaves", 50 + i) for i in range(20)])
    _, lexical = await index.search_hybrid(unit(99), terms, tenant_id="t-a", k=3)
    assert [h.payload["record_id"] for h in lexical] == ["flight"]
    assert lexical[0].score == pytest.approx(before, rel=1e-5)
    # Filters apply to the lexical list as to the dense one.
    _, none = await index.search_hybrid(unit(99), terms, tenant_id="t-a", k=3, filters={"agent_id": "nobody"})
    assert none == []
    dense_only, no_terms = await index.search_hybrid(unit(99), None, tenant_id="t-a", k=2)
    assert len(dense_only) == 2 and no_terms == []


async def test_neighbour_terms_are_folded_below_the_turns_own(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    await index.upsert(
        [
            text_point("t", "own", "We booked the ferry tickets.", 1),
            text_point("t", "neighbour", "Sounds great!", 2, neighbours=["We booked the ferry tickets."]),
            text_point("t", "filler", "Unrelated words entirely.", 3),
        ]
    )
    _, lexical = await index.search_hybrid(unit(7), BM25.query("ferry"), tenant_id="t", k=5)
    assert [h.payload["record_id"] for h in lexical] == ["own", "neighbour"]
    assert lexical[0].score > lexical[1].score > 0


async def test_update_terms_rewrites_existing_points_only(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    p = text_point("t", "turn", "Let us meet tomorrow.", 1)
    await index.upsert([p])
    ghost = text_point("t", "never-written", "ferry", 2)
    assert BM25.document("ferry") is not None
    changed = await index.update_terms(
        {p.id: BM25.document("Let us meet tomorrow.", ["the ferry leaves at six"]), ghost.id: ghost.sparse}  # type: ignore[dict-item]
    )
    assert changed == 1
    _, lexical = await index.search_hybrid(unit(5), BM25.query("ferry"), tenant_id="t", k=5)
    assert [h.payload["record_id"] for h in lexical] == ["turn"]
    assert await index.count(tenant_id="t") == 1  # the missing point was not created


def _tie_groups(hits: list[VectorHit], k: int) -> list[tuple[float, frozenset[str]]]:
    """Hits as (score, ids with that score), best first, without the last group (``k`` may cut a tie)."""
    groups: dict[float, set[str]] = defaultdict(set)
    for h in hits[:k]:
        groups[round(h.score, 4)].add(h.id)
    ordered = sorted(groups.items(), key=lambda g: -g[0])
    return [(score, frozenset(ids)) for score, ids in ordered[:-1]]


async def test_lexical_backends_are_congruent(tmp_path: Path) -> None:
    """The embedded engine and qdrant-client give the same BM25 scores and, up to the order of equal
    scores (neither engine defines it), the same ranking, for the same points and queries."""
    rnd = random.Random(3)
    vocab = [f"word{i}" for i in range(40)] + ["flight", "hotel", "refund", "allergy", "budget"]
    texts = [" ".join(rnd.choice(vocab) for _ in range(rnd.randint(3, 14))) for _ in range(200)]
    pts = [
        text_point(f"t{i % 2}", f"e{i}", t, i, neighbours=texts[max(0, i - 2) : i])
        for i, t in enumerate(texts)
    ]
    queries = [" ".join(rnd.sample(vocab, 3)) for _ in range(20)]
    filter_sets: list[dict[str, Any]] = [{}, {"agent_id": "agent-1"}]
    found: dict[str, list[list[tuple[float, frozenset[str]]]]] = {}
    for backend in BACKENDS:
        idx, closer = await _open(backend, tmp_path / backend, qdrant_settings())
        try:
            await idx.ensure_collection(V1)
            await idx.upsert(pts)
            found[backend] = []
            for qi, q in enumerate(queries):
                _, lexical = await idx.search_hybrid(
                    unit(qi), BM25.query(q), tenant_id=f"t{qi % 2}", k=10, filters=filter_sets[qi % 2]
                )
                found[backend].append(_tie_groups(lexical, 10))
        finally:
            await _close(closer)
    reference = found[BACKENDS[0]]
    assert sum(len(groups) for groups in reference) > 60  # the queries do find ranked matches
    for backend in BACKENDS[1:]:
        assert found[backend] == reference, backend
