"""Contract suite of core.ports.VectorIndex, run against every backend, plus a congruence test across them.

Backends: qdrant-client local mode in memory and on a path (QdrantVectorIndex), and Qdrant Edge
(EdgeVectorIndex). The path-backed ones are opened through ``open_vector_index`` like the app does.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from core.errors import InvalidInput, NotFound, StoreUnavailable
from core.ids import deterministic_id
from core.models import ModelVersion, VectorPoint
from core.points import Currency
from core.ports import VectorIndex
from core.settings import QdrantSettings, Settings
from core.stores.edge_index import EdgeVectorIndex
from core.stores.qdrant_index import QdrantVectorIndex
from core.stores.vector_factory import open_vector_index

DIM = 8
V1 = ModelVersion(name="test-model", revision="aaaa1111", dimension=DIM)
V2 = ModelVersion(name="test-model", revision="bbbb2222", dimension=DIM)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BACKENDS = ["local-memory", "local-path", "edge"]


def qdrant_settings(**overrides: Any) -> QdrantSettings:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {"collection_prefix": f"t{tag}", "alias": f"t{tag}_live", "hnsw_m": 8}
    return QdrantSettings(**{**base, **overrides})


async def _open(backend: str, tmp_path: Path, qs: QdrantSettings) -> tuple[VectorIndex, Any]:
    """The index and what closes it (a context manager or a client)."""
    if backend == "local-memory":
        client = AsyncQdrantClient(location=":memory:")
        return QdrantVectorIndex(client, settings=qs), client
    kind = "local" if backend == "local-path" else "edge"
    settings = Settings(data_dir=tmp_path, qdrant=qs.model_copy(update={"backend": kind}))
    cm = open_vector_index(settings)
    return await cm.__aenter__(), cm


async def _close(closer: Any) -> None:
    if isinstance(closer, AsyncQdrantClient):
        await closer.close()
    else:
        await closer.__aexit__(None, None, None)


@pytest.fixture(params=BACKENDS)
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    idx, closer = await _open(request.param, tmp_path, qdrant_settings())
    try:
        yield idx
    finally:
        await _close(closer)


def unit(seed: int, dim: int = DIM) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return [float(x) for x in v / np.linalg.norm(v)]


def point(
    tenant: str,
    source: str,
    vector: Sequence[float],
    *,
    version: ModelVersion = V1,
    agent_id: str = "agent-1",
    session_id: str = "s-1",
    kind: str = "message",
    created_at: datetime = T0,
    source_ids: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    content: str = "",
) -> VectorPoint:
    return VectorPoint(
        id=deterministic_id(tenant, "episode", source, version.key),
        vector=list(vector),
        payload={
            "tenant_id": tenant,
            "record_type": "episode",
            "record_id": source,
            "agent_id": agent_id,
            "session_id": session_id,
            "kind": kind,
            "content": content or f"content of {source}",
            "created_at": created_at.isoformat(),
            "created_ts": created_at.timestamp(),
            "source_ids": list(source_ids if source_ids is not None else [source]),
            "model_version": version.key,
            "metadata": metadata or {},
        },
    )


def ids_of(hits: Sequence[Any]) -> set[str]:
    return {h.payload["record_id"] for h in hits}


async def test_before_any_collection_nothing_is_live(index: VectorIndex) -> None:
    assert await index.live_version() is None
    assert await index.search(unit(0), tenant_id="a", k=5) == []
    assert await index.count() == 0
    with pytest.raises(NotFound):
        await index.upsert([point("a", "e1", unit(1))])
    await index.ping()


async def test_ensure_collection_is_idempotent(index: VectorIndex) -> None:
    first = await index.ensure_collection(V1)
    await index.upsert([point("a", "e1", unit(1))])
    second = await index.ensure_collection(V1)
    assert first == second
    assert await index.live_version() == V1.key
    assert await index.count() == 1


async def test_alias_switch_moves_default_reads_and_writes(index: VectorIndex) -> None:
    c1 = await index.ensure_collection(V1)
    await index.upsert([point("a", "old", unit(1))])
    c2 = await index.ensure_collection(V2, make_live=False)
    assert c1 != c2
    assert await index.live_version() == V1.key
    await index.upsert([point("a", "new", unit(1), version=V2)], collection=c2)
    assert ids_of(await index.search(unit(1), tenant_id="a", k=5)) == {"old"}

    assert await index.ensure_collection(V2) == c2
    assert await index.live_version() == V2.key
    assert ids_of(await index.search(unit(1), tenant_id="a", k=5)) == {"new"}
    assert ids_of(await index.search(unit(1), tenant_id="a", k=5, collection=c1)) == {"old"}
    assert await index.count(collection=c1) == 1

    await index.ensure_collection(V1)  # switching back is just as atomic
    assert await index.live_version() == V1.key


async def test_points_of_another_model_are_refused(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    with pytest.raises(InvalidInput, match="model_version"):
        await index.upsert([point("a", "e1", unit(1), version=V2)])
    missing = point("a", "e2", unit(2))
    missing = missing.model_copy(
        update={"payload": {k: v for k, v in missing.payload.items() if k != "model_version"}}
    )
    with pytest.raises(InvalidInput, match="model_version"):
        await index.upsert([missing])
    with pytest.raises(InvalidInput, match="vector"):
        await index.upsert([point("a", "e3", unit(3, dim=DIM + 1))])
    assert await index.count() == 0


async def test_upsert_is_idempotent(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    pts = [point("a", f"e{i}", unit(i)) for i in range(5)]
    await index.upsert(pts)
    await index.upsert(pts)
    assert await index.count() == 5
    await index.upsert([point("a", "e0", unit(0), content="edited")])
    assert await index.count() == 5
    hits = await index.search(unit(0), tenant_id="a", k=1)
    assert hits[0].payload["content"] == "edited"
    assert hits[0].id == str(pts[0].id)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


async def test_tenants_never_see_each_other(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    await index.upsert([point("tenant-a", f"a{i}", unit(i)) for i in range(6)])
    await index.upsert([point("tenant-b", f"b{i}", unit(i)) for i in range(3)])
    hits_b = await index.search(unit(0), tenant_id="tenant-b", k=50)
    assert ids_of(hits_b) == {"b0", "b1", "b2"}
    assert all(h.payload["tenant_id"] == "tenant-b" for h in hits_b)
    assert await index.search(unit(0), tenant_id="tenant-c", k=5) == []
    assert await index.count(tenant_id="tenant-a") == 6
    assert await index.count(tenant_id="tenant-b") == 3
    assert await index.count() == 9
    with pytest.raises(InvalidInput):
        await index.search(unit(0), tenant_id="", k=5)


async def test_each_filter(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    await index.upsert(
        [
            point("a", "p1", unit(1), agent_id="ag1", session_id="s1", kind="message", created_at=T0),
            point(
                "a",
                "p2",
                unit(2),
                agent_id="ag2",
                session_id="s1",
                kind="summary",
                created_at=T0 + timedelta(hours=1),
                metadata={"topic": "price", "round": 2},
            ),
            point(
                "a",
                "p3",
                unit(3),
                agent_id="ag1",
                session_id="s2",
                kind="fact",
                created_at=T0 + timedelta(hours=2),
                metadata={"topic": "terms", "round": 3},
            ),
        ]
    )

    async def found(**filters: Any) -> set[str]:
        return ids_of(await index.search(unit(1), tenant_id="a", k=10, filters=filters))

    assert await found() == {"p1", "p2", "p3"}
    assert await found(agent_id="ag1") == {"p1", "p3"}
    assert await found(session_id="s1") == {"p1", "p2"}
    assert await found(kind="summary") == {"p2"}
    assert await found(kind=["summary", "fact"]) == {"p2", "p3"}
    assert await found(agent_id="ag1", session_id="s2") == {"p3"}
    assert await found(created_after=T0 + timedelta(minutes=30)) == {"p2", "p3"}
    assert await found(created_before=(T0 + timedelta(hours=1)).isoformat()) == {"p1"}
    assert await found(created_after=T0 + timedelta(hours=1), created_before=T0 + timedelta(hours=2)) == {
        "p2"
    }
    assert await found(created_after="2026-01-01T01:00:00") == {"p2", "p3"}  # naive ISO means UTC
    assert await found(metadata={"topic": "price"}) == {"p2"}
    assert await found(**{"metadata.round": 3}) == {"p3"}
    assert await found(metadata={"topic": ["price", "terms"]}) == {"p2", "p3"}
    assert await found(agent_id="nobody") == set()
    with pytest.raises(InvalidInput, match=r"filters\.colour"):
        await found(colour="red")
    with pytest.raises(InvalidInput, match="created_after"):
        await found(created_after="yesterday")


async def test_delete_by_source_reaches_every_version(index: VectorIndex) -> None:
    c1 = await index.ensure_collection(V1)
    await index.upsert(
        [
            point("a", "summary", unit(1), source_ids=["e1", "e2"]),
            point("a", "e3", unit(3)),
            point("b", "e1", unit(1), source_ids=["e1"]),
        ]
    )
    c2 = await index.ensure_collection(V2, make_live=False)
    await index.upsert([point("a", "e1", unit(1), version=V2, source_ids=["e1"])], collection=c2)

    await index.delete_by_source(tenant_id="a", source_ids=["e2", "unknown"])
    assert ids_of(await index.search(unit(1), tenant_id="a", k=10)) == {"e3"}
    assert await index.count(tenant_id="b", collection=c1) == 1  # another tenant's point survives
    assert await index.count(collection=c2) == 1

    await index.delete_by_source(tenant_id="a", source_ids=["e1"])
    assert await index.count(collection=c2) == 0
    await index.delete_by_source(tenant_id="a", source_ids=[])
    assert await index.count() == 2


async def test_delete_ids(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    pts = [point("a", f"e{i}", unit(i)) for i in range(4)]
    await index.upsert(pts)
    await index.delete_ids([pts[0].id, pts[2].id, uuid.uuid4()])
    assert ids_of(await index.search(unit(0), tenant_id="a", k=10)) == {"e1", "e3"}
    assert await index.count() == 2
    await index.delete_ids([])
    assert await index.count() == 2


async def test_search_validates_input(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    await index.upsert([point("a", "e1", unit(1))])
    with pytest.raises(InvalidInput):
        await index.search(unit(1), tenant_id="a", k=0)
    with pytest.raises(InvalidInput):
        await index.search(unit(1, dim=DIM + 2), tenant_id="a", k=3)
    hits = await index.search(unit(1), tenant_id="a", k=3)
    assert [h.payload["record_id"] for h in hits] == ["e1"]
    with pytest.raises(NotFound):
        await index.search(unit(1), tenant_id="a", k=3, collection="no_such_collection")
    with pytest.raises(NotFound):
        await index.upsert([point("a", "e9", unit(9))], collection="no_such_collection")


async def test_many_concurrent_calls(index: VectorIndex) -> None:
    await index.ensure_collection(V1)
    writes = [index.upsert([point("a", f"w{i}-{j}", unit(i * 10 + j)) for j in range(10)]) for i in range(10)]
    reads = [index.search(unit(i), tenant_id="a", k=5) for i in range(20)]
    await asyncio.gather(*writes, *reads)
    assert await index.count(tenant_id="a") == 100


@pytest.mark.parametrize("backend", ["local-path", "edge"])
async def test_data_survives_reopen(backend: str, tmp_path: Path) -> None:
    qs = qdrant_settings()
    idx, closer = await _open(backend, tmp_path, qs)
    await idx.ensure_collection(V1)
    await idx.ensure_collection(V2)
    await idx.upsert([point("a", f"e{i}", unit(i), version=V2) for i in range(3)])
    await _close(closer)

    idx, closer = await _open(backend, tmp_path, qs)
    try:
        assert await idx.live_version() == V2.key
        assert await idx.count(tenant_id="a") == 3
        assert ids_of(await idx.search(unit(2), tenant_id="a", k=1)) == {"e2"}
    finally:
        await _close(closer)


@pytest.mark.parametrize("backend", ["local-path", "edge"])
async def test_one_process_owns_an_embedded_store(backend: str, tmp_path: Path) -> None:
    qs = qdrant_settings()
    _idx, closer = await _open(backend, tmp_path, qs)
    try:
        with pytest.raises(StoreUnavailable):
            await _open(backend, tmp_path, qs)
    finally:
        await _close(closer)


async def test_closed_edge_index_is_unavailable(tmp_path: Path) -> None:
    idx = await EdgeVectorIndex.open(tmp_path, settings=qdrant_settings())
    await idx.ensure_collection(V1)
    await idx.close()
    await idx.close()  # idempotent
    with pytest.raises(StoreUnavailable):
        await idx.count()
    with pytest.raises(StoreUnavailable):
        await idx.ping()


async def test_closed_qdrant_client_is_unavailable() -> None:
    client = AsyncQdrantClient(location=":memory:")
    idx = QdrantVectorIndex(client, settings=qdrant_settings())
    await idx.ensure_collection(V1)
    await client.close()
    with pytest.raises(StoreUnavailable):
        await idx.ping()
    with pytest.raises(StoreUnavailable):
        await idx.live_version()


async def test_edge_builds_hnsw_in_the_background(tmp_path: Path) -> None:
    idx = await EdgeVectorIndex.open(tmp_path, settings=qdrant_settings(), optimize_after_points=500)
    try:
        await idx.ensure_collection(V1)
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((1200, DIM)).astype(np.float32)
        await idx.upsert([point(f"t{i % 3}", f"e{i}", vectors[i].tolist()) for i in range(1200)])
        assert await idx.optimize() in (True, False)  # waits behind the background build
        assert await idx.count() == 1200
        hits = await idx.search(vectors[5].tolist(), tenant_id="t2", k=1)
        assert ids_of(hits) == {"e5"}
    finally:
        await idx.close()


async def test_backends_are_congruent(tmp_path: Path) -> None:
    """Same calls against every backend give the same top ids (exact search on a small set)."""
    rng = np.random.default_rng(42)
    vectors = rng.standard_normal((300, DIM))
    pts = [
        point(
            f"t{i % 2}",
            f"e{i}",
            vectors[i].tolist(),
            agent_id=f"ag{i % 3}",
            kind=("message", "summary")[i % 2 == 0 and i % 4 == 0],
            created_at=T0 + timedelta(minutes=i),
        )
        for i in range(300)
    ]
    queries = rng.standard_normal((15, DIM))
    filter_sets: list[dict[str, Any]] = [
        {},
        {"agent_id": "ag1"},
        {"kind": "summary"},
        {"created_after": T0 + timedelta(minutes=100)},
    ]
    results: dict[str, list[list[str]]] = {}
    scores: dict[str, list[float]] = {}
    for backend in BACKENDS:
        idx, closer = await _open(backend, tmp_path / backend, qdrant_settings())
        try:
            await idx.ensure_collection(V1)
            await idx.upsert(pts)
            results[backend], scores[backend] = [], []
            for qi, q in enumerate(queries):
                hits = await idx.search(q.tolist(), tenant_id=f"t{qi % 2}", k=5, filters=filter_sets[qi % 4])
                results[backend].append([h.id for h in hits])
                scores[backend].extend(h.score for h in hits)
        finally:
            await _close(closer)
    reference = results[BACKENDS[0]]
    assert all(len(r) == 5 for r in reference)
    for backend in BACKENDS[1:]:
        assert results[backend] == reference, backend
        assert scores[backend] == pytest.approx(scores[BACKENDS[0]], abs=1e-4)


async def test_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    """Server mode translates connection failures (nothing listens on port 1)."""
    qs = qdrant_settings(url="http://127.0.0.1:1", timeout_s=2.0)
    settings = Settings(data_dir=tmp_path, qdrant=qs)
    assert settings.qdrant_backend == "server"
    async with open_vector_index(settings) as idx:
        with pytest.raises(StoreUnavailable):
            await idx.ping()
        with pytest.raises(StoreUnavailable):
            await idx.ensure_collection(V1)
        with pytest.raises(StoreUnavailable):
            await idx.search(unit(1), tenant_id="a", k=3)


async def test_server_backend_needs_a_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, qdrant=qdrant_settings(backend="server"))
    with pytest.raises(StoreUnavailable, match="url"):
        async with open_vector_index(settings):
            pass


async def test_edge_forgets_a_collection_missing_on_disk(tmp_path: Path) -> None:
    qs = qdrant_settings()
    idx = await EdgeVectorIndex.open(tmp_path, settings=qs)
    name = await idx.ensure_collection(V1)
    await idx.close()
    shutil.rmtree(tmp_path / name)
    idx = await EdgeVectorIndex.open(tmp_path, settings=qs)
    try:
        assert await idx.live_version() is None
        assert await idx.count() == 0
        assert await idx.ensure_collection(V1) == name
        assert await idx.live_version() == V1.key
    finally:
        await idx.close()


def current(at: datetime, *, as_of: bool = True) -> dict[str, float]:
    return {"current_at": at.timestamp(), **({"as_of": at.timestamp()} if as_of else {})}


async def test_supersede_marks_and_currency_filters(index: VectorIndex) -> None:
    day = timedelta(days=1)
    lease = Currency(valid_from=T0 + day, valid_to=T0 + 30 * day)
    c1 = await index.ensure_collection(V1)

    def dated(tenant: str, source: str, seed: int, at: datetime, **kw: Any) -> VectorPoint:
        currency: Currency = kw.pop("currency", Currency())
        p = point(tenant, source, unit(seed), created_at=at, **kw)
        return p.model_copy(update={"payload": {**p.payload, **currency.payload(at)}})

    await index.upsert(
        [
            dated("a", "old", 1, T0),
            dated("a", "new", 2, T0 + 10 * day),
            dated("a", "summary", 3, T0, source_ids=["summary", "old", "other"]),
            dated("a", "lease", 4, T0, currency=lease),
            dated("b", "old", 1, T0),
        ]
    )
    c2 = await index.ensure_collection(V2, make_live=False)
    await index.upsert([dated("a", "old", 1, T0, version=V2)], collection=c2)

    switch = T0 + 10 * day
    await index.mark_superseded(tenant_id="a", marks=[("old", "new", switch.timestamp())])
    # A later mark of the same source changes nothing: the earliest supersession stands.
    await index.mark_superseded(tenant_id="a", marks=[("old", "lease", (switch + day).timestamp())])

    async def found(tenant: str, filters: dict[str, Any], collection: str | None = None) -> set[str]:
        hits = await index.search(unit(1), tenant_id=tenant, k=10, filters=filters, collection=collection)
        return ids_of(hits)

    now = datetime.now(UTC)
    assert await found("a", current(now, as_of=False)) == {"new"}  # the lease expired, "old" replaced
    assert await found("a", current(T0 + 5 * day)) == {"old", "summary", "lease"}  # "new" not yet there
    assert await found("a", current(switch + 0.5 * day)) == {"new", "lease"}
    assert await found("a", {"as_of": (T0 + 5 * day).timestamp()}) == {"old", "summary", "lease"}
    assert await found("a", {}) == {"old", "new", "summary", "lease"}
    assert await found("b", current(now)) == {"old"}  # another tenant's point is never marked
    assert await found("a", current(now), collection=c2) == set()  # every version's collection
    assert c1 != c2

    hits = await index.search(unit(1), tenant_id="a", k=10)
    marked = {h.payload["record_id"]: h.payload.get("superseded_by") for h in hits}
    assert marked == {"old": "new", "summary": "new", "new": None, "lease": None}
