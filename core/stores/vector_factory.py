"""Opens the semantic tier chosen by settings and closes what it opened."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from qdrant_client import AsyncQdrantClient

from core.errors import StoreUnavailable
from core.instrumented_store import instrument_store
from core.ports import VectorIndex
from core.settings import Settings
from core.stores.edge_index import EdgeVectorIndex
from core.stores.qdrant_index import STORE, QdrantVectorIndex

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_vector_index(settings: Settings) -> AsyncIterator[VectorIndex]:
    """Yield the VectorIndex for ``settings.qdrant_backend``; on exit close the client or shards it opened.

    server: an ``AsyncQdrantClient`` on ``qdrant.url``. local: qdrant-client local mode under
    ``qdrant_path / "local"`` (brute force, for development). edge: embedded Qdrant Edge shards under
    ``qdrant_path / "edge"``. Both embedded stores belong to one process: host them in a single Ray
    deployment and reach them from the others through it.
    """
    q = settings.qdrant
    backend = settings.qdrant_backend
    async with AsyncExitStack() as stack:
        index: VectorIndex
        if backend == "edge":
            edge_index = await EdgeVectorIndex.open(settings.qdrant_path / "edge", settings=q)
            stack.push_async_callback(edge_index.close)
            index = edge_index
        else:
            if backend == "server":
                if not q.url:
                    raise StoreUnavailable(STORE, "qdrant.backend=server needs qdrant.url")
                # No version probe: it would open a connection from a background thread at construction.
                client = AsyncQdrantClient(
                    url=q.url, api_key=q.api_key, timeout=int(max(1, q.timeout_s)), check_compatibility=False
                )
            else:
                path = settings.qdrant_path / "local"
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    client = AsyncQdrantClient(path=str(path))
                except (RuntimeError, OSError) as exc:  # e.g. the directory is locked by another process
                    raise StoreUnavailable(STORE, f"cannot open local store at {path}") from exc
            stack.push_async_callback(client.close)
            index = QdrantVectorIndex(client, settings=q)
        logger.info("vector index backend: %s", backend)
        yield instrument_store(index, "qdrant")
