"""Semantic tier on Qdrant Edge: Qdrant's own HNSW engine embedded in this process, one shard per collection.

Same collections, payloads and filters as :class:`core.stores.qdrant_index.QdrantVectorIndex`. Layout under
the root directory: one shard directory per collection and ``hybridmem_meta.json`` holding the alias and
each collection's model version (replaced atomically). The store is owned by exactly one process (an
exclusive lock file enforces it); other processes reach it through that one (a single Ray deployment).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import qdrant_edge as edge

from core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from core.models import JsonDict, ModelVersion, SparseVector, VectorHit, VectorPoint
from core.settings import QdrantSettings
from core.stores.edge_build import (
    SwapGate,
    build_dir,
    copy_for_build,
    log_build_failure,
    recover_dirs,
    run_build,
    swap_in_build,
    write_json_atomically,
)
from core.stores.qdrant_index import (
    SPARSE_NAME,
    STORE,
    checked_points,
    collection_name,
    has_lexical,
    version_metadata,
)
from core.stores.vector_filters import (
    FLOAT_INDEXES,
    KEYWORD_INDEXES,
    TENANT_FIELD,
    Match,
    parse_filters,
    sources_condition,
    superseded_marks,
    to_edge_filter,
)

logger = logging.getLogger(__name__)

META_FILE = "hybridmem_meta.json"
LOCK_FILE = ".hybridmem.lock"
UPSERT_CHUNK = 1024
# Points written to a collection before its HNSW index is rebuilt. Until then new points are scored
# exactly, which the tenant filter keeps cheap (~1-2 ms at 5k points per tenant). qdrant-edge-py 0.9 holds
# the GIL while it optimises (~13 s for 30k 384-d points on 2 cores), so the build runs in a child process
# on a copy of the shard and is swapped in afterwards (core.stores.edge_build). None: only on optimize().
OPTIMIZE_AFTER_POINTS = 20_000
# Segments above this size (KB) get an HNSW index when optimised (~6.5k 384-d float32 vectors). A tenant
# whose filtered subset is smaller is scored exactly (full_scan_threshold, same unit).
INDEXING_THRESHOLD_KB = 10_000

T = TypeVar("T")

_DISTANCES = {"Cosine": edge.Distance.Cosine, "Dot": edge.Distance.Dot, "Euclid": edge.Distance.Euclid}


class EdgeVectorIndex:
    """Vector tier on embedded Qdrant Edge shards. Owns its shards; open with :meth:`open`, then ``close()``.

    Safe for concurrent async callers in the owning process: writes (upserts, deletes) run one at a
    time, in call order, on a private writer thread; searches run on worker threads; and collection/alias
    changes are serialised by a lock. After ``optimize_after_points`` new points, HNSW is rebuilt in a
    child process on a copy of the shard, which then replaces the live one: the writes made meanwhile are
    replayed into it first, and searches pause only for the swap itself (well under a second).
    """

    def __init__(
        self,
        root: Path,
        *,
        settings: QdrantSettings,
        optimize_after_points: int | None = OPTIMIZE_AFTER_POINTS,
    ) -> None:
        self._root = root
        self._settings = settings
        self._optimize_after = optimize_after_points
        self._shards: dict[str, edge.EdgeShard] = {}
        self._meta: JsonDict = {"aliases": {}, "collections": {}}
        self._pending: dict[str, int] = {}  # points written per collection since the last optimisation
        self._builds: dict[str, asyncio.Task[dict[str, float]]] = {}
        # Writes since a build copied a collection, to replay into the built copy (writer thread only).
        self._delta: dict[str, list[edge.UpdateOperation]] = {}
        self._gate = SwapGate()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-writer")
        self._meta_lock = asyncio.Lock()
        self._lock_file: IO[str] | None = None
        self._closed = True
        self._reads = 0
        self._no_reads = asyncio.Event()
        self._no_reads.set()

    @classmethod
    async def open(cls, root: Path, *, settings: QdrantSettings, **kwargs: Any) -> EdgeVectorIndex:
        """Take the directory's lock and load every collection recorded in its metadata."""
        index = cls(root, settings=settings, **kwargs)
        await asyncio.to_thread(index._open_sync)
        index._closed = False
        return index

    def _open_sync(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            lock = (self._root / LOCK_FILE).open("a+")
        except OSError as exc:
            raise StoreUnavailable(STORE, f"cannot open edge store at {self._root}") from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise StoreUnavailable(STORE, f"edge store {self._root} is owned by another process") from exc
        self._lock_file = lock
        try:
            self._load_collections()
        except BaseException:
            self._close_sync()
            raise

    def _load_collections(self) -> None:
        meta_path = self._root / META_FILE
        if meta_path.exists():
            try:
                self._meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StoreUnavailable(STORE, f"unreadable {meta_path}") from exc
        for name in list(self._meta["collections"]):
            recover_dirs(self._root, name)
            path = self._root / name
            if not path.exists():
                logger.warning("edge collection %s is recorded but missing on disk; forgetting it", name)
                del self._meta["collections"][name]
                self._meta["aliases"] = {a: c for a, c in self._meta["aliases"].items() if c != name}
                continue
            self._shards[name] = self._guard(edge.EdgeShard.load, str(path))

    @staticmethod
    def _guard(fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (RuntimeError, OSError) as exc:
            raise StoreUnavailable(STORE, f"edge: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise InvalidInput("vector", f"edge refused the request: {exc}") from exc

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a mutation on the single writer thread (writes are applied in call order)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._guard, fn, *args)

    def _apply(self, name: str, op: edge.UpdateOperation) -> None:
        """Apply one update to the collection's current shard (writer thread); record it for a build."""
        self._shards[name].update(op)
        delta = self._delta.get(name)
        if delta is not None:
            delta.append(op)

    async def _read(self, name: str, fn: Callable[[edge.EdgeShard], T]) -> T:
        """Run a query on a worker thread; close() waits for reads in flight before closing shards."""
        self._reads += 1
        self._no_reads.clear()
        try:
            return await asyncio.to_thread(self._read_sync, name, fn)
        finally:
            self._reads -= 1
            if self._reads == 0:
                self._no_reads.set()

    def _read_sync(self, name: str, fn: Callable[[edge.EdgeShard], T]) -> T:
        with self._gate.reading():  # the shard is looked up inside: a swap may have replaced it
            shard = self._shards.get(name)
            if shard is None:
                raise StoreUnavailable(STORE, "edge index is closed")
            return self._guard(fn, shard)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(STORE, "edge index is closed")

    def _collection(self, collection: str | None) -> str:
        """The named collection, or the alias's; NotFound if it has no shard."""
        self._check_open()
        name = collection or self._meta["aliases"].get(self._settings.alias)
        if name is None:
            raise NotFound("collection", self._settings.alias)
        if name not in self._shards:
            raise NotFound("collection", name)
        return name

    def _edge_config(self, version: ModelVersion) -> edge.EdgeConfig:
        s = self._settings
        return edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=version.dimension, distance=_DISTANCES[s.distance]),
            # BM25 term weights; the engine applies IDF at query time (core.retrieval.bm25_sparse).
            sparse_vectors={SPARSE_NAME: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
            hnsw_config=edge.HnswIndexConfig(
                m=s.hnsw_m, ef_construct=s.hnsw_ef_construct, full_scan_threshold=10_000, payload_m=s.hnsw_m
            ),
            optimizers=edge.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
            # One search thread per query: with the GIL held per call, a pool adds handoffs, not speed
            # (16 cores, 100k points: p95 1.4 ms vs 5-10 ms with the default pool).
            max_search_threads=1,
        )

    def _create_shard(self, name: str, version: ModelVersion) -> edge.EdgeShard:
        recover_dirs(self._root, name)
        path = self._root / name
        config = self._edge_config(version)
        # A directory without metadata is left by a crash between creating it and recording it.
        shard = (
            edge.EdgeShard.load(str(path), config)
            if path.exists()
            else edge.EdgeShard.create(str(path), config)
        )
        shard.update(
            edge.UpdateOperation.create_field_index(TENANT_FIELD, edge.KeywordIndexParams(is_tenant=True))
        )
        for field in FLOAT_INDEXES:
            shard.update(edge.UpdateOperation.create_field_index(field, edge.PayloadSchemaType.Float))
        for field in KEYWORD_INDEXES:
            shard.update(edge.UpdateOperation.create_field_index(field, edge.PayloadSchemaType.Keyword))
        return shard

    async def ensure_collection(self, version: ModelVersion, *, make_live: bool = True) -> str:
        """Create the version's shard (+ payload indexes) if missing; point the alias at it."""
        self._check_open()
        name = collection_name(self._settings, version)
        async with self._meta_lock:
            meta = dict(self._meta)
            collections = dict(meta["collections"])
            known = collections.get(name)
            shard = None
            if known is None:
                shard = await self._write(self._create_shard, name, version)
                collections[name] = version_metadata(version)
                logger.info("created edge collection %s for %s", name, version.key)
            elif known.get("model_version") != version.key or known.get("dimension") != version.dimension:
                raise Conflict(
                    f"collection {name!r} holds {known.get('model_version')!r}, not {version.key!r}"
                )
            meta["collections"] = collections
            if make_live and meta["aliases"].get(self._settings.alias) != name:
                meta["aliases"] = {**meta["aliases"], self._settings.alias: name}
                logger.info("alias %s now points at %s", self._settings.alias, name)
            if meta != self._meta:
                await self._write(write_json_atomically, self._root / META_FILE, meta)
            if shard is not None:
                self._shards[name] = shard
            self._meta = meta
        return name

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None:
        """Write points (deterministic ids: a replay overwrites); refuses another model's vectors."""
        if not points:
            return
        name = self._collection(collection)
        meta = self._meta["collections"][name]
        checked = checked_points(points, version_key=meta["model_version"], dimension=int(meta["dimension"]))
        lexical = has_lexical(meta)
        for start in range(0, len(checked), UPSERT_CHUNK):
            batch = [
                edge.Point(p.id, _vectors(p, lexical=lexical), p.payload)
                for p in checked[start : start + UPSERT_CHUNK]
            ]
            await self._write(self._apply, name, edge.UpdateOperation.upsert_points(batch))
        self._pending[name] = self._pending.get(name, 0) + len(checked)
        if self._optimize_after is not None and self._pending[name] >= self._optimize_after:
            running = self._builds.get(name)
            if running is None or running.done():
                self._start_build(name)

    def _start_build(self, name: str) -> asyncio.Task[dict[str, float]]:
        self._pending[name] = 0
        task = asyncio.get_running_loop().create_task(self._build(name), name=f"edge-build-{name}")
        task.add_done_callback(log_build_failure)
        self._builds[name] = task
        return task

    async def _build(self, name: str) -> dict[str, float]:
        """Copy the shard, build its indexes in a child process, replay the writes made since, swap it in."""
        started = time.perf_counter()
        directory = build_dir(self._root, name)
        try:
            await self._write(self._copy_sync, name)
            stats = await run_build(directory)
            replayed = await self._write(self._install_sync, name, directory)
        except BaseException:
            await asyncio.shield(self._write(self._discard_sync, name, directory))
            raise
        logger.info(
            "edge collection %s: HNSW rebuilt in a child process (%d points, build %.1f s, %d writes "
            "replayed, %.1f s in all)",
            name, stats.get("points", 0), stats.get("seconds", 0.0), replayed, time.perf_counter() - started,
        )  # fmt: skip
        return stats

    def _copy_sync(self, name: str) -> None:
        self._shards[name].flush()
        copy_for_build(self._root, name)
        self._delta[name] = []

    def _install_sync(self, name: str, directory: Path) -> int:
        ops = self._delta.pop(name, [])
        built = edge.EdgeShard.load(str(directory))
        try:
            for op in ops:
                built.update(op)
            built.flush()
        finally:
            built.close()
        with self._gate.exclusive():
            live = self._shards[name]
            live.flush()
            live.close()
            try:
                swap_in_build(self._root, name)
            finally:
                recover_dirs(self._root, name)  # a failed swap leaves the old directory in place
                self._shards[name] = edge.EdgeShard.load(str(self._root / name))
        return len(ops)

    def _discard_sync(self, name: str, directory: Path) -> None:
        self._delta.pop(name, None)
        shutil.rmtree(directory, ignore_errors=True)

    async def optimize(self, collection: str | None = None) -> bool:
        """Build HNSW indexes and merge segments now (in a child process); True if anything changed.

        Waits for a build already running first. Call after a bulk load (e.g. a re-embedding) before
        making the collection live.
        """
        name = self._collection(collection)
        running = self._builds.get(name)
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        stats = await self._start_build(name)
        return bool(stats.get("changed", 1.0))

    async def search(
        self,
        vector: Sequence[float],
        *,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:
        """Nearest points of the tenant, best first; an empty list while no collection exists."""
        if k < 1:
            raise InvalidInput("k", "must be at least 1")
        query_filter = to_edge_filter(parse_filters(tenant_id, filters))
        try:
            name = self._collection(collection)
        except NotFound:
            if collection is None:
                return []
            raise
        dimension = int(self._meta["collections"][name]["dimension"])
        if len(vector) != dimension:
            raise InvalidInput("vector", f"has {len(vector)} dimensions, expected {dimension}")
        request = edge.QueryRequest(
            limit=k,
            query=edge.Query.Nearest(list(vector)),
            filter=query_filter,
            params=edge.SearchParams(hnsw_ef=self._settings.search_ef),
            with_payload=True,
        )
        found = await self._read(name, lambda shard: shard.query(request))
        return [VectorHit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in found]

    async def search_hybrid(
        self,
        vector: Sequence[float] | None,
        terms: SparseVector | None,
        *,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> tuple[list[VectorHit], list[VectorHit]]:
        """The tenant's nearest points and its best BM25 matches, from one engine call (a query batch).

        IDF counts only the tenant's points, so one tenant's scores never depend on another's text.
        Empty lists while no collection exists; no lexical list without ``terms``.
        """
        if k < 1:
            raise InvalidInput("k", "must be at least 1")
        tenant_only = to_edge_filter([Match(TENANT_FIELD, tenant_id)])
        query_filter = to_edge_filter(parse_filters(tenant_id, filters))
        try:
            name = self._collection(collection)
        except NotFound:
            if collection is None:
                return [], []
            raise
        meta = self._meta["collections"][name]
        requests = []
        if vector is not None:
            if len(vector) != int(meta["dimension"]):
                raise InvalidInput("vector", f"has {len(vector)} dimensions, expected {meta['dimension']}")
            requests.append(
                edge.QueryRequest(
                    limit=k, query=edge.Query.Nearest(list(vector)), filter=query_filter,
                    params=edge.SearchParams(hnsw_ef=self._settings.search_ef), with_payload=True,
                )
            )  # fmt: skip
        lexical = terms is not None and has_lexical(meta)
        if terms is not None and lexical:
            sparse = edge.SparseVector(terms.indices, terms.values)
            requests.append(
                edge.QueryRequest(
                    limit=k, query=edge.Query.Nearest(sparse, using=SPARSE_NAME), filter=query_filter,
                    params=edge.SearchParams(idf=edge.IdfParams(corpus=tenant_only)), with_payload=True,
                )
            )  # fmt: skip
        if not requests:
            return [], []
        found = await self._read(name, lambda shard: shard.query_batch(edge.QueryBatchRequest(requests)))
        # The engine's own output: built without re-validating every payload (measured: 10 % of a
        # /v1/context request's CPU went into validating 200 hits).
        lists = [
            [VectorHit.model_construct(id=str(p.id), score=p.score, payload=p.payload or {}) for p in hits]
            for hits in found
        ]
        return (lists[0] if vector is not None else []), (lists[-1] if lexical else [])

    async def lexical_ready(self, collection: str | None = None) -> bool:
        """Whether the collection (default: the alias's) holds BM25 sparse vectors; False with none."""
        try:
            name = self._collection(collection)
        except NotFound:
            return False
        return has_lexical(self._meta["collections"][name])

    async def update_terms(
        self, terms: dict[uuid.UUID, SparseVector], *, collection: str | None = None
    ) -> int:
        """Replace the BM25 vector of those of the given points that exist; returns how many did."""
        if not terms:
            return 0
        name = self._collection(collection)
        if not has_lexical(self._meta["collections"][name]):
            return 0
        ids: list[edge.PointId] = list(terms)
        found = await self._read(name, lambda shard: shard.retrieve(ids, False, False))
        existing = [uuid.UUID(str(r.id)) for r in found]
        if not existing:
            return 0
        update = [
            edge.PointVectors(pid, {SPARSE_NAME: edge.SparseVector(terms[pid].indices, terms[pid].values)})
            for pid in existing
        ]
        await self._write(self._apply, name, edge.UpdateOperation.update_vectors(update))
        return len(existing)

    async def delete_by_source(self, *, tenant_id: str, source_ids: Sequence[str]) -> None:
        """Delete the tenant's points derived from any of ``source_ids``, in every model version's collection.

        A deleted source must vanish from every version, including one being re-embedded.
        """
        self._check_open()
        if not source_ids:
            return
        op = edge.UpdateOperation.delete_points_by_filter(
            to_edge_filter([Match(TENANT_FIELD, tenant_id), sources_condition(source_ids)])
        )
        for name in list(self._shards):
            await self._write(self._apply, name, op)

    async def mark_superseded(self, *, tenant_id: str, marks: Sequence[tuple[str, str, float]]) -> None:
        """Mark the tenant's points derived from each source superseded (core.ports.VectorIndex), in every
        model version's collection; a point keeps its earliest mark."""
        self._check_open()
        for name in list(self._shards):
            for where, values in superseded_marks(tenant_id, marks):
                op = edge.UpdateOperation.set_payload_by_filter(to_edge_filter(where), values)
                await self._write(self._apply, name, op)

    async def delete_ids(self, ids: Sequence[uuid.UUID], *, collection: str | None = None) -> None:
        if not ids:
            return
        name = self._collection(collection)
        point_ids: list[edge.PointId] = list(ids)
        await self._write(self._apply, name, edge.UpdateOperation.delete_points(point_ids))

    async def count(self, *, tenant_id: str | None = None, collection: str | None = None) -> int:
        """Exact number of points (of one tenant when given); 0 while no collection exists."""
        try:
            name = self._collection(collection)
        except NotFound:
            if collection is None:
                return 0
            raise
        count_filter = None if tenant_id is None else to_edge_filter([Match(TENANT_FIELD, tenant_id)])
        request = edge.CountRequest(exact=True, filter=count_filter)
        return await self._read(name, lambda shard: shard.count(request))

    async def info(self, collection: str | None = None) -> dict[str, int]:
        """Points, HNSW-indexed vectors and segments of a collection (the alias's by default)."""
        name = self._collection(collection)
        shard_info = await self._read(name, lambda shard: shard.info())
        return {
            "points": shard_info.points_count,
            "indexed_vectors": shard_info.indexed_vectors_count,
            "segments": shard_info.segments_count,
        }

    async def live_version(self) -> str | None:
        self._check_open()
        live = self._meta["aliases"].get(self._settings.alias)
        return None if live is None else str(self._meta["collections"][live]["model_version"])

    async def ping(self) -> None:
        self._check_open()
        if not await asyncio.to_thread(self._root.is_dir):
            raise StoreUnavailable(STORE, f"edge store directory {self._root} is gone")

    async def close(self) -> None:
        """Stop index builds, finish queued writes, flush and close every shard, release the lock."""
        if self._closed:
            return
        self._closed = True
        builds = list(self._builds.values())
        for task in builds:
            task.cancel()  # kills the child; the live shard has every write
        await asyncio.gather(*builds, return_exceptions=True)
        await self._no_reads.wait()
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_sync)
        self._writer.shutdown(wait=True)

    def _close_sync(self) -> None:
        for name, shard in self._shards.items():
            try:
                shard.flush()
                shard.close()
            except (RuntimeError, OSError):
                logger.exception("closing edge collection %s failed", name)
        self._shards.clear()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _vectors(point: VectorPoint, *, lexical: bool) -> Any:
    """A point's vectors for the shard: the dense one, and its BM25 terms where the collection has them."""
    if lexical and point.sparse is not None and point.sparse.indices:
        return {"": point.vector, SPARSE_NAME: edge.SparseVector(point.sparse.indices, point.sparse.values)}
    return point.vector
