"""Retriever deployment: hybrid search and token-budgeted context, and the semantic engine's owner.

A query crosses Ingress -> Retriever -> Embedder plus the stores. With the embedded engine (qdrant-edge,
or qdrant-client's local mode) this replica opens it and is its only owner: searches run in process, and
every writer (the Ingress, consolidation, Ray jobs) reaches the engine through :class:`HandleVectorIndex`.
With a Qdrant server each replica talks to the server directly, and the deployment scales out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from core import metrics  # module reference: Serve pickles deployment classes by value
from core.errors import StoreUnavailable
from core.models import JsonDict, ModelVersion, SparseVector, VectorHit, VectorPoint
from core.ports import Retriever as ReadPath
from core.resources import open_resources
from core.retrieval.build import build_hybrid_retriever
from core.retrieval.query import ContextQuery, SearchQuery
from core.retrieval.results import ContextResult, SearchResult
from core.settings import load_settings
from core.stores.vector_factory import open_vector_index
from deployments.embedder import HandleEmbedder
from deployments.metrics_backend import init_observability
from deployments.remote import call

log = logging.getLogger(__name__)

ENGINE = "qdrant"  # how a failed engine call is reported (StoreUnavailable's store)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class Retriever:
    """Embeds the query through the Embedder's handle (the collection's model version), searches here."""

    async def __init__(self, settings: dict[str, Any] | None, embedder: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self._settings = load_settings(settings)
        init_observability(self._settings)
        self._owns_engine = self._settings.qdrant_backend != "server"
        self._stack = contextlib.AsyncExitStack()
        res = await self._stack.enter_async_context(open_resources(self._settings))
        try:
            self._index = await self._stack.enter_async_context(open_vector_index(self._settings))
        except StoreUnavailable as exc:
            await self._stack.aclose()
            if self._owns_engine:
                raise StoreUnavailable(
                    ENGINE,
                    f"{exc.message}; the embedded engine has exactly one owner, so run one Retriever "
                    "replica (or point HYBRIDMEM_QDRANT__URL at a Qdrant server to scale out)",
                ) from exc
            raise
        self._reads = build_hybrid_retriever(
            self._settings, resources=res, vectors=self._index, embedder=HandleEmbedder(embedder)
        )

    # -- the read path (core.ports.Retriever): the query arrives and the result leaves as they are ----

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._reads.search(query)

    async def context(self, query: ContextQuery) -> ContextResult:
        return await self._reads.context(query)

    # -- the semantic engine, for writers (mirrors core.ports.VectorIndex) --------------------------

    async def ensure_collection(self, version: ModelVersion, make_live: bool = True) -> str:
        return await self._index.ensure_collection(version, make_live=make_live)

    async def upsert(self, points: list[VectorPoint], collection: str | None = None) -> None:
        await self._index.upsert(points, collection=collection)

    async def nearest(
        self,
        vector: list[float],
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:
        return await self._index.search(
            vector, tenant_id=tenant_id, k=k, filters=filters, collection=collection
        )

    async def search_hybrid(
        self,
        vector: list[float] | None,
        terms: SparseVector | None,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> tuple[list[VectorHit], list[VectorHit]]:
        return await self._index.search_hybrid(
            vector, terms, tenant_id=tenant_id, k=k, filters=filters, collection=collection
        )

    async def lexical_ready(self, collection: str | None = None) -> bool:
        return await self._index.lexical_ready(collection)

    async def update_terms(self, terms: dict[uuid.UUID, SparseVector], collection: str | None = None) -> int:
        return await self._index.update_terms(terms, collection=collection)

    async def delete_by_source(self, tenant_id: str, source_ids: list[str]) -> None:
        await self._index.delete_by_source(tenant_id=tenant_id, source_ids=source_ids)

    async def mark_superseded(self, tenant_id: str, marks: list[tuple[str, str, float]]) -> None:
        await self._index.mark_superseded(tenant_id=tenant_id, marks=marks)

    async def delete_ids(self, ids: list[uuid.UUID], collection: str | None = None) -> None:
        await self._index.delete_ids(ids, collection=collection)

    async def count(self, tenant_id: str | None = None, collection: str | None = None) -> int:
        return await self._index.count(tenant_id=tenant_id, collection=collection)

    async def live_version(self) -> str | None:
        return await self._index.live_version()

    async def ping(self) -> None:
        await self._index.ping()

    async def check_health(self) -> None:
        # Only the engine this replica owns: a Qdrant server being down is not cured by a restart here
        # (reads report the semantic tier degraded meanwhile).
        if self._owns_engine:
            await self._index.ping()

    async def __del__(self) -> None:
        # Serve's documented replica shutdown hook: flush the engine, close the pool and clients.
        await self._stack.aclose()


class HandleRetriever:
    """core.ports.Retriever over the Retriever's handle (what the Ingress calls), core errors unwrapped.

    When the Retriever is down, or has not answered within ``fallback_after_s`` (paused, overloaded), and
    a ``fallback`` is given, the Ingress answers from the episodic and working tiers itself and reports
    the semantic tier degraded: a lost Retriever costs recall, not availability.
    """

    def __init__(
        self,
        handle: DeploymentHandle[Any],
        *,
        fallback: ReadPath | None = None,
        fallback_after_s: float | None = None,
    ) -> None:
        self._h = handle
        self._fallback = fallback
        self._after_s = fallback_after_s

    async def search(self, query: SearchQuery) -> SearchResult:
        found: SearchResult = await self._read("search", query)
        return found

    async def context(self, query: ContextQuery) -> ContextResult:
        packed: ContextResult = await self._read("context", query)
        return packed

    async def _read(self, method: str, query: SearchQuery | ContextQuery) -> Any:
        try:
            async with asyncio.timeout(self._after_s if self._fallback is not None else None):
                return await call("retriever", getattr(self._h, method).remote(query))
        except (StoreUnavailable, TimeoutError) as exc:
            if self._fallback is None:
                raise
            reason = type(exc).__name__
        log.warning("Retriever unavailable (%s); answering %s from Postgres and Redis", reason, method)
        metrics.METRICS.retrieval_tier_degraded_total.inc(tier="semantic")
        tiers = tuple(t for t in (query.tiers or ("episodic", "working")) if t != "semantic")
        out = await getattr(self._fallback, method)(dataclasses.replace(query, tiers=tiers or ("episodic",)))
        return out.model_copy(update={"degraded": sorted({*out.degraded, "semantic"})})


class HandleVectorIndex:
    """core.ports.VectorIndex over the Retriever's handle: how writers reach the embedded engine."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._h = handle

    async def ensure_collection(self, version: ModelVersion, *, make_live: bool = True) -> str:
        result: str = await call(ENGINE, self._h.ensure_collection.remote(version, make_live))
        return result

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None:
        await call(ENGINE, self._h.upsert.remote(list(points), collection))

    async def search(
        self,
        vector: Sequence[float],
        *,
        tenant_id: str,
        k: int,
        filters: JsonDict | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:
        hits: list[VectorHit] = await call(
            ENGINE, self._h.nearest.remote(list(vector), tenant_id, k, filters, collection)
        )
        return hits

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
        found: tuple[list[VectorHit], list[VectorHit]] = await call(
            ENGINE,
            self._h.search_hybrid.remote(
                None if vector is None else list(vector), terms, tenant_id, k, filters, collection
            ),
        )
        return found

    async def lexical_ready(self, collection: str | None = None) -> bool:
        ready: bool = await call(ENGINE, self._h.lexical_ready.remote(collection))
        return ready

    async def update_terms(
        self, terms: dict[uuid.UUID, SparseVector], *, collection: str | None = None
    ) -> int:
        n: int = await call(ENGINE, self._h.update_terms.remote(terms, collection))
        return n

    async def delete_by_source(self, *, tenant_id: str, source_ids: Sequence[str]) -> None:
        await call(ENGINE, self._h.delete_by_source.remote(tenant_id, list(source_ids)))

    async def mark_superseded(self, *, tenant_id: str, marks: Sequence[tuple[str, str, float]]) -> None:
        await call(ENGINE, self._h.mark_superseded.remote(tenant_id, list(marks)))

    async def delete_ids(self, ids: Sequence[uuid.UUID], *, collection: str | None = None) -> None:
        await call(ENGINE, self._h.delete_ids.remote(list(ids), collection))

    async def count(self, *, tenant_id: str | None = None, collection: str | None = None) -> int:
        n: int = await call(ENGINE, self._h.count.remote(tenant_id, collection))
        return n

    async def live_version(self) -> str | None:
        v: str | None = await call(ENGINE, self._h.live_version.remote())
        return v

    async def ping(self) -> None:
        await call(ENGINE, self._h.ping.remote())

    async def close(self) -> None:
        return None
