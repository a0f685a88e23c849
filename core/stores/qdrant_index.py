"""Semantic tier on qdrant-client: one collection per model version, reached through an alias.

Works the same against a Qdrant server (URL) and qdrant-client's local mode (``path=`` or ``":memory:"``).
Local mode searches by brute force and keeps no payload indexes: it is for development and tests; the
embedded default is :class:`core.stores.edge_index.EdgeVectorIndex`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from core.models import JsonDict, ModelVersion, SparseVector, VectorHit, VectorPoint
from core.settings import QdrantSettings
from core.stores.vector_filters import (
    FLOAT_INDEXES,
    KEYWORD_INDEXES,
    TENANT_FIELD,
    TIME_FIELD,
    Match,
    parse_filters,
    sources_condition,
    superseded_marks,
    to_qdrant_filter,
    to_timestamp,
)

logger = logging.getLogger(__name__)

STORE = "qdrant"
UPSERT_CHUNK = 256
# The BM25 sparse vector of every point (named; the dense vector is the unnamed default). A collection
# records it in its metadata; one created before lexical search moved into the engine has none.
SPARSE_NAME = "bm25"


def collection_name(settings: QdrantSettings, version: ModelVersion) -> str:
    """``{collection_prefix}_{version.collection_suffix}``: one collection per model version."""
    return f"{settings.collection_prefix}_{version.collection_suffix}"


def version_metadata(version: ModelVersion) -> JsonDict:
    """What a collection records about the model whose vectors it holds."""
    return {
        "model_version": version.key,
        "model_name": version.name,
        "model_revision": version.revision,
        "dimension": version.dimension,
        "backend": version.backend,
        "sparse": SPARSE_NAME,
    }


def has_lexical(meta: JsonDict) -> bool:
    """Whether a collection with this metadata holds BM25 sparse vectors (see :data:`SPARSE_NAME`)."""
    return meta.get("sparse") == SPARSE_NAME


def checked_points(points: Sequence[VectorPoint], *, version_key: str, dimension: int) -> list[VectorPoint]:
    """Refuse points of another model or dimension; fill ``created_ts`` from ``created_at`` when missing.

    Vectors of two models never share a collection, so each payload must name this collection's version.
    """
    out: list[VectorPoint] = []
    for i, point in enumerate(points):
        payload = point.payload
        if payload.get("model_version") != version_key:
            raise InvalidInput(
                f"points[{i}].payload.model_version",
                f"{payload.get('model_version')!r} does not match the collection's {version_key!r}",
            )
        tenant = payload.get(TENANT_FIELD)
        if not isinstance(tenant, str) or not tenant:
            raise InvalidInput(f"points[{i}].payload.tenant_id", "must be a non-empty string")
        if len(point.vector) != dimension:
            raise InvalidInput(
                f"points[{i}].vector", f"has {len(point.vector)} dimensions, expected {dimension}"
            )
        if TIME_FIELD not in payload and payload.get("created_at") is not None:
            ts = to_timestamp(payload["created_at"], field=f"points[{i}].payload.created_at")
            point = point.model_copy(update={"payload": {**payload, TIME_FIELD: ts}})
        out.append(point)
    return out


def is_local(client: AsyncQdrantClient) -> bool:
    """True for qdrant-client's embedded local mode (``":memory:"`` or ``path=``)."""
    opts = client.init_options
    return opts.get("location") == ":memory:" or opts.get("path") is not None


class QdrantVectorIndex:
    """Vector tier backed by qdrant-client. Borrows its client: ``close()`` leaves it open for its owner.

    The alias in settings points at the live collection; a search or write without ``collection`` goes
    there. Each collection stores its model version in the collection metadata.
    """

    def __init__(self, client: AsyncQdrantClient, *, settings: QdrantSettings) -> None:
        self._client = client
        self._settings = settings
        self._local = is_local(client)
        self._versions: dict[str, JsonDict] = {}  # collection -> version metadata; immutable once created

    @asynccontextmanager
    async def _call(self, op: str) -> AsyncIterator[None]:
        """Bound a client call by the configured timeout and translate driver errors."""
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                yield
        except UnexpectedResponse as exc:
            status = exc.status_code
            if status == 404:
                raise NotFound("qdrant collection", op) from exc
            if status == 409:
                raise Conflict(f"qdrant {op}: already exists") from exc
            if status is not None and 400 <= status < 500 and status != 429:
                raise InvalidInput(op, f"qdrant refused the request ({status})") from exc
            raise StoreUnavailable(STORE, f"{op}: HTTP {status}") from exc
        except ValueError as exc:  # local mode (and request validation) report bad input as ValueError
            if "not found" in str(exc):
                raise NotFound("qdrant collection", op) from exc
            raise InvalidInput(op, str(exc)) from exc
        except (ResponseHandlingException, httpx.HTTPError, RuntimeError, OSError) as exc:
            raise StoreUnavailable(STORE, f"{op}: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise StoreUnavailable(STORE, f"{op}: timed out") from exc

    async def _alias_target(self) -> str | None:
        async with self._call("get_aliases"):
            found = await self._client.get_aliases()
        return next((a.collection_name for a in found.aliases if a.alias_name == self._settings.alias), None)

    async def _exists(self, name: str) -> bool:
        async with self._call("collection_exists"):
            return await self._client.collection_exists(name)

    async def _version_of(self, name: str) -> JsonDict:
        cached = self._versions.get(name)
        if cached is not None:
            return cached
        async with self._call("get_collection"):
            info = await self._client.get_collection(name)
        meta = dict(info.config.metadata or {})
        if "model_version" not in meta or "dimension" not in meta:
            raise Conflict(f"collection {name!r} carries no model version metadata")
        self._versions[name] = meta
        return meta

    async def _target(self, collection: str | None) -> str:
        """The named collection, or the one the alias points at (NotFound before ensure_collection)."""
        if collection is not None:
            return collection
        live = await self._alias_target()
        if live is None:
            raise NotFound("collection", self._settings.alias)
        return live

    async def ensure_collection(self, version: ModelVersion, *, make_live: bool = True) -> str:
        """Create the version's collection and payload indexes if missing; switch the alias atomically."""
        name = collection_name(self._settings, version)
        wanted = version_metadata(version)
        if not await self._exists(name):
            await self._create(name, version, wanted)
        meta = await self._version_of(name)
        if meta.get("model_version") != version.key or meta.get("dimension") != version.dimension:
            raise Conflict(f"collection {name!r} holds {meta.get('model_version')!r}, not {version.key!r}")
        if not self._local:  # local mode keeps no payload indexes (and warns when asked for one)
            await self._create_payload_indexes(name)
        if make_live:
            await self._point_alias(name)
        return name

    async def _create(self, name: str, version: ModelVersion, meta: JsonDict) -> None:
        s = self._settings
        try:
            async with self._call("create_collection"):
                await self._client.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=version.dimension, distance=models.Distance(s.distance)
                    ),
                    sparse_vectors_config={
                        SPARSE_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                    hnsw_config=models.HnswConfigDiff(
                        m=s.hnsw_m, ef_construct=s.hnsw_ef_construct, payload_m=s.hnsw_m
                    ),
                    shard_number=s.shard_number,
                    replication_factor=s.replication_factor,
                    metadata=meta,
                )
        except (Conflict, InvalidInput):  # the server says 409 or 400 when another process created it first
            if not await self._exists(name):
                raise
            logger.info("collection %s was created concurrently", name)
            return
        logger.info("created collection %s for %s", name, version.key)

    async def _create_payload_indexes(self, name: str) -> None:
        fields: list[tuple[str, models.PayloadSchemaType | models.KeywordIndexParams]] = [
            (TENANT_FIELD, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)),
            *((f, models.PayloadSchemaType.FLOAT) for f in FLOAT_INDEXES),
            *((f, models.PayloadSchemaType.KEYWORD) for f in KEYWORD_INDEXES),
        ]
        for field, schema in fields:
            async with self._call("create_payload_index"):
                await self._client.create_payload_index(name, field, field_schema=schema, wait=True)

    async def _point_alias(self, name: str) -> None:
        alias = self._settings.alias
        current = await self._alias_target()
        if current == name:
            return
        ops: list[models.AliasOperations] = []
        if current is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        ops.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=name, alias_name=alias)
            )
        )
        async with self._call("update_collection_aliases"):
            await self._client.update_collection_aliases(change_aliases_operations=ops)
        logger.info("alias %s now points at %s (was %s)", alias, name, current)

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None:
        """Write points (ids are deterministic, so a replay overwrites); refuses another model's vectors."""
        if not points:
            return
        target = await self._target(collection)
        meta = await self._version_of(target)
        checked = checked_points(points, version_key=meta["model_version"], dimension=int(meta["dimension"]))
        lexical = has_lexical(meta)
        for start in range(0, len(checked), UPSERT_CHUNK):
            batch = [
                models.PointStruct(id=str(p.id), vector=_vectors(p, lexical=lexical), payload=p.payload)
                for p in checked[start : start + UPSERT_CHUNK]
            ]
            async with self._call("upsert"):
                await self._client.upsert(target, points=batch, wait=True)

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
        query_filter = to_qdrant_filter(parse_filters(tenant_id, filters))
        target = collection or self._settings.alias
        if self._local and collection is None:  # alias lookup is in-process and cheap in local mode
            live = await self._alias_target()
            if live is None:
                return []
            target = live
        params = None if self._local else models.SearchParams(hnsw_ef=self._settings.search_ef)
        try:
            async with self._call("query_points"):
                found = await self._client.query_points(
                    target,
                    query=list(vector),
                    query_filter=query_filter,
                    limit=k,
                    with_payload=True,
                    search_params=params,
                )
        except NotFound:
            if collection is None:
                return []
            raise
        return [VectorHit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in found.points]

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
        """The tenant's nearest points and its best BM25 matches, in one request (a query batch).

        IDF counts only the tenant's points. Empty lists while no collection exists; no lexical list
        without ``terms`` or in a collection without sparse vectors.
        """
        if k < 1:
            raise InvalidInput("k", "must be at least 1")
        try:
            target = await self._target(collection)
            meta = await self._version_of(target)
        except NotFound:
            if collection is None:
                return [], []
            raise
        query_filter = to_qdrant_filter(parse_filters(tenant_id, filters))
        dense_params = None if self._local else models.SearchParams(hnsw_ef=self._settings.search_ef)
        requests = []
        if vector is not None:
            requests.append(
                models.QueryRequest(
                    query=list(vector), filter=query_filter, limit=k, with_payload=True, params=dense_params
                )
            )
        lexical = terms is not None and has_lexical(meta)
        if terms is not None and lexical:
            tenant_only = to_qdrant_filter([Match(TENANT_FIELD, tenant_id)])
            requests.append(
                models.QueryRequest(
                    query=models.SparseVector(indices=terms.indices, values=terms.values),
                    using=SPARSE_NAME, filter=query_filter, limit=k, with_payload=True,
                    params=models.SearchParams(idf=models.IdfCorpusParams(corpus=tenant_only)),
                )
            )  # fmt: skip
        if not requests:
            return [], []
        async with self._call("query_batch_points"):
            found = await self._client.query_batch_points(target, requests=requests)
        lists = [
            [
                VectorHit.model_construct(id=str(p.id), score=p.score, payload=p.payload or {})
                for p in r.points
            ]
            for r in found
        ]
        return (lists[0] if vector is not None else []), (lists[-1] if lexical else [])

    async def lexical_ready(self, collection: str | None = None) -> bool:
        """Whether the collection (default: the alias's) holds BM25 sparse vectors; False with none."""
        try:
            return has_lexical(await self._version_of(await self._target(collection)))
        except NotFound:
            return False

    async def update_terms(
        self, terms: dict[uuid.UUID, SparseVector], *, collection: str | None = None
    ) -> int:
        """Replace the BM25 vector of those of the given points that exist; returns how many did."""
        if not terms:
            return 0
        target = await self._target(collection)
        if not has_lexical(await self._version_of(target)):
            return 0
        async with self._call("retrieve"):
            found = await self._client.retrieve(
                target, ids=[str(i) for i in terms], with_payload=False, with_vectors=False
            )
        existing = [uuid.UUID(str(r.id)) for r in found]
        if not existing:
            return 0
        update = [
            models.PointVectors(
                id=str(pid),
                vector={
                    SPARSE_NAME: models.SparseVector(indices=terms[pid].indices, values=terms[pid].values)
                },
            )
            for pid in existing
        ]
        async with self._call("update_vectors"):
            await self._client.update_vectors(target, points=update, wait=True)
        return len(existing)

    async def _our_collections(self) -> list[str]:
        async with self._call("get_collections"):
            found = await self._client.get_collections()
        prefix = self._settings.collection_prefix + "_"
        return [c.name for c in found.collections if c.name.startswith(prefix)]

    async def delete_by_source(self, *, tenant_id: str, source_ids: Sequence[str]) -> None:
        """Delete the tenant's points derived from any of ``source_ids``, in every model version's collection.

        A deleted source must vanish from every version, including one being re-embedded.
        """
        if not source_ids:
            return
        selector = models.FilterSelector(
            filter=to_qdrant_filter([Match(TENANT_FIELD, tenant_id), sources_condition(source_ids)])
        )
        for name in await self._our_collections():
            async with self._call("delete"):
                await self._client.delete(name, points_selector=selector, wait=True)

    async def mark_superseded(self, *, tenant_id: str, marks: Sequence[tuple[str, str, float]]) -> None:
        """Mark the tenant's points derived from each source superseded (core.ports.VectorIndex), in every
        model version's collection; a point keeps its earliest mark."""
        for name in await self._our_collections():
            for where, values in superseded_marks(tenant_id, marks):
                selector = models.FilterSelector(filter=to_qdrant_filter(where))
                async with self._call("set_payload"):
                    await self._client.set_payload(name, payload=values, points=selector, wait=True)

    async def delete_ids(self, ids: Sequence[uuid.UUID], *, collection: str | None = None) -> None:
        if not ids:
            return
        target = await self._target(collection)
        selector = models.PointIdsList(points=[str(i) for i in ids])
        async with self._call("delete"):
            await self._client.delete(target, points_selector=selector, wait=True)

    async def count(self, *, tenant_id: str | None = None, collection: str | None = None) -> int:
        """Exact number of points (of one tenant when given); 0 while no collection exists."""
        try:
            target = await self._target(collection)
        except NotFound:
            return 0
        count_filter = None if tenant_id is None else to_qdrant_filter([Match(TENANT_FIELD, tenant_id)])
        async with self._call("count"):
            found = await self._client.count(target, count_filter=count_filter, exact=True)
        return int(found.count)

    async def live_version(self) -> str | None:
        live = await self._alias_target()
        if live is None:
            return None
        return str((await self._version_of(live))["model_version"])

    async def ping(self) -> None:
        async with self._call("ping"):
            await self._client.get_collections()

    async def close(self) -> None:
        """Nothing to release: the client belongs to whoever opened it (see ``open_vector_index``)."""


def _vectors(point: VectorPoint, *, lexical: bool) -> models.VectorStruct:
    """A point's vectors: the dense one (unnamed), and its BM25 terms where the collection has them."""
    if lexical and point.sparse is not None and point.sparse.indices:
        sparse = models.SparseVector(indices=point.sparse.indices, values=point.sparse.values)
        return {"": point.vector, SPARSE_NAME: sparse}
    return point.vector
