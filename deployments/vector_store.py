"""VectorStore deployment: the single owner of an embedded (local/edge) Qdrant store.

Local stores are single-process, so exactly one replica opens the store and every other process
(Retriever, Ingress, consolidation jobs) reaches it through :class:`HandleVectorIndex`. With a Qdrant
server configured, callers talk to the server directly and this deployment is not part of the app.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from core.models import JsonDict, ModelVersion, VectorHit, VectorPoint
from core.settings import load_settings
from core.stores.vector_factory import open_vector_index
from deployments.metrics_backend import init_observability
from deployments.remote import call


@serve.deployment(num_replicas=1, max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.25})
class VectorStore:
    """Hosts one VectorIndex; methods mirror core.ports.VectorIndex."""

    async def __init__(self, settings: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
        self._settings = load_settings(settings)
        init_observability(self._settings)
        self._stack = contextlib.AsyncExitStack()
        self._index = await self._stack.enter_async_context(open_vector_index(self._settings))

    async def ensure_collection(self, version: ModelVersion, make_live: bool = True) -> str:
        return await self._index.ensure_collection(version, make_live=make_live)

    async def upsert(self, points: list[VectorPoint], collection: str | None = None) -> None:
        await self._index.upsert(points, collection=collection)

    async def search(
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

    async def delete_by_source(self, tenant_id: str, source_ids: list[str]) -> None:
        await self._index.delete_by_source(tenant_id=tenant_id, source_ids=source_ids)

    async def delete_ids(self, ids: list[uuid.UUID], collection: str | None = None) -> None:
        await self._index.delete_ids(ids, collection=collection)

    async def count(self, tenant_id: str | None = None, collection: str | None = None) -> int:
        return await self._index.count(tenant_id=tenant_id, collection=collection)

    async def live_version(self) -> str | None:
        return await self._index.live_version()

    async def ping(self) -> None:
        await self._index.ping()

    async def check_health(self) -> None:
        await self._index.ping()

    async def __del__(self) -> None:
        # Serve's documented shutdown hook for a replica: flush and close the store it owns.
        await self._stack.aclose()


class HandleVectorIndex:
    """core.ports.VectorIndex over the VectorStore deployment's handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._h = handle

    async def ensure_collection(self, version: ModelVersion, *, make_live: bool = True) -> str:
        result: str = await call("qdrant", self._h.ensure_collection.remote(version, make_live))
        return result

    async def upsert(self, points: Sequence[VectorPoint], *, collection: str | None = None) -> None:
        await call("qdrant", self._h.upsert.remote(list(points), collection))

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
            "qdrant", self._h.search.remote(list(vector), tenant_id, k, filters, collection)
        )
        return hits

    async def delete_by_source(self, *, tenant_id: str, source_ids: Sequence[str]) -> None:
        await call("qdrant", self._h.delete_by_source.remote(tenant_id, list(source_ids)))

    async def delete_ids(self, ids: Sequence[uuid.UUID], *, collection: str | None = None) -> None:
        await call("qdrant", self._h.delete_ids.remote(list(ids), collection))

    async def count(self, *, tenant_id: str | None = None, collection: str | None = None) -> int:
        n: int = await call("qdrant", self._h.count.remote(tenant_id, collection))
        return n

    async def live_version(self) -> str | None:
        v: str | None = await call("qdrant", self._h.live_version.remote())
        return v

    async def ping(self) -> None:
        await call("qdrant", self._h.ping.remote())

    async def close(self) -> None:
        return None
