"""Builds the per-replica ApiContext: opens stores, wires peers' handles, closes everything after."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from core.auth import ApiKeyAuthenticator
from core.ports import VectorIndex
from core.ratelimit import TokenBucketLimiter
from core.resources import open_resources
from core.service import HybridMemoryService
from core.settings import Settings
from core.stores.vector_factory import open_vector_index
from deployments.embedder import HandleEmbedder
from deployments.http.deps import ApiContext
from deployments.vector_store import HandleVectorIndex

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def vector_index_for(
    settings: Settings, vector_store: DeploymentHandle[Any] | None
) -> AsyncIterator[VectorIndex]:
    """Server mode: a direct client per process. Embedded mode: the one VectorStore replica's handle."""
    if settings.qdrant_backend == "server" or vector_store is None:
        async with open_vector_index(settings) as index:
            yield index
    else:
        yield HandleVectorIndex(vector_store)


@contextlib.asynccontextmanager
async def api_context(
    settings: Settings,
    *,
    embedder: DeploymentHandle[Any] | None,
    vector_store: DeploymentHandle[Any] | None,
    retriever: Any = None,
    admin: Any = None,
) -> AsyncIterator[ApiContext]:
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        vectors = await stack.enter_async_context(vector_index_for(settings, vector_store))
        text_embedder = HandleEmbedder(embedder) if embedder is not None else None
        service = HybridMemoryService(
            working=res.working,
            episodic=res.episodic,
            vectors=vectors,
            embedder=text_embedder,
            settings=settings,
        )
        yield ApiContext(
            settings=settings,
            service=service,
            auth=ApiKeyAuthenticator(settings.auth.api_keys),
            retriever=retriever,
            embedder=text_embedder,
            admin=admin,
            limiter=(
                TokenBucketLimiter(settings.auth.rate_limit_per_s, settings.auth.rate_limit_burst)
                if settings.auth.rate_limit_per_s
                else None
            ),
            extras={"resources": res, "vectors": vectors},
        )
