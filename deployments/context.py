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
from core.retrieval.build import build_hybrid_retriever
from core.service import HybridMemoryService
from core.settings import Settings
from core.stores.vector_factory import open_vector_index
from deployments.embedder import HandleEmbedder
from deployments.http.deps import ApiContext
from deployments.retriever import HandleRetriever, HandleVectorIndex

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def vector_index_for(
    settings: Settings, engine_owner: DeploymentHandle[Any] | None
) -> AsyncIterator[VectorIndex]:
    """Server mode: a direct client per process. Embedded mode: through the Retriever, the engine's owner."""
    if settings.qdrant_backend == "server" or engine_owner is None:
        async with open_vector_index(settings) as index:
            yield index
    else:
        yield HandleVectorIndex(engine_owner)


@contextlib.asynccontextmanager
async def api_context(
    settings: Settings,
    *,
    embedder: DeploymentHandle[Any] | None,
    retriever: DeploymentHandle[Any] | None,
    admin: Any = None,
) -> AsyncIterator[ApiContext]:
    """The Ingress's context: its own stores, the Retriever's read path (with a fallback from Postgres
    and Redis while the Retriever is away) and, in embedded mode, the engine through the Retriever."""
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        vectors = await stack.enter_async_context(vector_index_for(settings, retriever))
        text_embedder = HandleEmbedder(embedder) if embedder is not None else None
        reads = None
        if retriever is not None and text_embedder is not None:
            fallback = build_hybrid_retriever(
                settings, resources=res, vectors=vectors, embedder=text_embedder, engine_lexical=False
            )
            reads = HandleRetriever(
                retriever,
                fallback=fallback,
                fallback_after_s=settings.retrieval.fallback_after_s,
            )
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
            retriever=reads,
            embedder=text_embedder,
            admin=admin,
            limiter=(
                TokenBucketLimiter(settings.auth.rate_limit_per_s, settings.auth.rate_limit_burst)
                if settings.auth.rate_limit_per_s
                else None
            ),
            extras={"resources": res, "vectors": vectors},
        )
