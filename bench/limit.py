"""The read path's limit: the same ``core`` code on the same kind of data in ONE plain process.

uvicorn + the app's own FastAPI routes, with everything the Serve app spreads over replicas held in
process: the embedding model (with the Redis embedding cache, as the Embedder has it), the semantic
engine, Postgres and Redis clients, and the HybridRetriever. ``hybridmem bench retrieve`` loads it with
the same memories as the served app and drives both with the same queries, so that served / limit is a
ratio taken in one run on one machine.

    python -m bench.limit SETTINGS_JSON PORT
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from bench.procs import stop
from core.auth import ApiKeyAuthenticator
from core.embedding.cache import CachedEmbedder, RedisEmbeddingCache
from core.embedding.loader import load_embedder
from core.embedding.types import TextEmbedder
from core.resources import open_resources
from core.retrieval.build import build_hybrid_retriever
from core.service import HybridMemoryService
from core.settings import Settings, load_settings
from core.stores.vector_factory import open_vector_index
from deployments.http.api import create_api
from deployments.http.deps import ApiContext
from deployments.http.routes_search import router as search_router

# Ray starts its workers at this niceness: the limit runs at the same priority as the replicas it is
# compared with, so that whatever else runs on the machine takes from both alike.
RAY_WORKER_NICENESS = 15


@contextlib.asynccontextmanager
async def limit_context(settings: Settings) -> AsyncIterator[ApiContext]:
    """Every store, the model and the retriever opened in this process; all closed after."""
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        vectors = await stack.enter_async_context(open_vector_index(settings))
        embedder: TextEmbedder = await load_embedder(settings.embedding)
        if settings.embedding.cache_enabled:
            cache = RedisEmbeddingCache(
                res.redis, prefix=settings.redis.key_prefix, ttl_s=settings.embedding.cache_ttl_s
            )
            embedder = CachedEmbedder(embedder, cache)
        service = HybridMemoryService(
            working=res.working, episodic=res.episodic, vectors=vectors, embedder=embedder, settings=settings
        )
        yield ApiContext(
            settings=settings,
            service=service,
            auth=ApiKeyAuthenticator(settings.auth.api_keys),
            retriever=build_hybrid_retriever(settings, resources=res, vectors=vectors, embedder=embedder),
            embedder=embedder,
        )


def limit_app(settings: Settings) -> FastAPI:
    return create_api(
        lambda: limit_context(settings),
        max_body_bytes=settings.limits.max_request_bytes,
        request_timeout_s=settings.request_timeout_s,
        extra_routers=(search_router,),
    )


@contextlib.contextmanager
def limit_server(
    settings: dict[str, Any], *, port: int, ready_timeout_s: float = 180.0
) -> Iterator[tuple[str, int]]:
    """Start the limit server on ``port`` in a child process; yields (base URL, pid); stops it after."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="hm-limit-", delete=False) as f:
        json.dump(settings, f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.limit", f.name, str(port)],
        cwd=Path(__file__).resolve().parents[1],
        preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"limit server exited with {proc.returncode} before it was ready")
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"limit server not ready after {ready_timeout_s:.0f} s")
            time.sleep(0.3)
        yield base, proc.pid
    finally:
        stop(proc, grace_s=30)
        Path(f.name).unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    import uvicorn

    settings_file, port = argv
    settings = load_settings(json.loads(Path(settings_file).read_text(encoding="utf-8")))
    uvicorn.run(limit_app(settings), host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
