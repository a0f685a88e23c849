"""Embedding benchmark: raw model vs the Serve Embedder (batched, single-text) vs plain FastAPI vs cache.

``hybridmem bench embed --json`` prints one JSON object. Figures (sentences or requests per second):
raw_sent_per_s (in-process encode, best batch size), served_batch_sent_per_s (32 texts/request over
Serve HTTP), single_req_per_s (1 text/request, 16 concurrent clients, Serve HTTP), plain_fastapi_req_per_s
(same load on FastAPI + uvicorn with the model in-process, no batching), cache_hit_sent_per_s (all hits,
CachedEmbedder over real Redis, 32 texts per call) and the ratios the targets are set on.
query_under_bulk: one-text query latency over Serve HTTP on an idle replica and while two clients post
512-text requests back to back (what a query meets while consolidation embeds), with the bulk rate.

Backend figures (same texts, same process, interleaved chunk by chunk so machine noise hits both alike):
backend_speedup (the CPU-optimised backend's sentences/s over torch's on LoCoMo turns, through the
product's embedder with its micro-batching), backend_cosine_mean (against torch, over LoCoMo turns and
SciFact abstracts), single_text_latency_ms per backend. ``python -m bench.embed backends
[--quality]`` runs only these; --quality adds vector-only LoCoMo recall@10 and SciFact nDCG@10 per backend.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json as jsonlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI, Request

from bench.embed_backends import compare_backends, load_texts
from bench.embed_bulk import queries_under_bulk
from bench.procs import stop

log = logging.getLogger(__name__)

BATCH_TEXTS = 32
SINGLE_CLIENTS = 16
RAW_BATCH_SIZES = (16, 32, 64, 128)
SERVE_MAX_BATCH = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _threads() -> int:
    return int(os.environ.get("HYBRIDMEM_EMBEDDING__CPU_THREADS") or os.cpu_count() or 1)


# --- raw model ---------------------------------------------------------------------------------------


def measure_raw(
    texts: list[str], threads: int, batch_sizes: tuple[int, ...] = RAW_BATCH_SIZES
) -> tuple[float, int]:
    """Best in-process throughput over ``batch_sizes`` (the ceiling the served figures compare to)."""
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    model = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=threads))
    best, best_bs = 0.0, 0
    try:
        for bs in batch_sizes:
            start = time.perf_counter()
            model._model.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
            rate = len(texts) / (time.perf_counter() - start)
            log.info("raw batch_size=%d: %.1f sent/s", bs, rate)
            if rate > best:
                best, best_bs = rate, bs
    finally:
        model.close()
    return best, best_bs


# --- load generators ---------------------------------------------------------------------------------


async def _drive(url: str, bodies: list[dict[str, Any]], clients: int) -> float:
    """POST every body from ``clients`` concurrent connections; returns requests per second."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait({**body, "encoding_format": "base64"})
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post(url, json=body)
            if r.status_code != 200:
                errors += 1
                log.warning("POST %s → %d: %s", url, r.status_code, r.text[:200])
            # Decode like a real client (the OpenAI client asks for base64 float32 by default).
            payload = r.json()
            for v in payload["vectors"]:
                np.frombuffer(base64.b64decode(v), dtype="<f4")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{errors} of {len(bodies)} requests to {url} failed")
    return len(bodies) / elapsed


def drive(url: str, bodies: list[dict[str, Any]], clients: int, *, warmup: int = 0) -> float:
    if warmup:
        asyncio.run(_drive(url, bodies[:warmup], clients))
    return asyncio.run(_drive(url, bodies, clients))


# --- plain FastAPI baseline --------------------------------------------------------------------------


def plain_app(threads: int) -> Any:
    """FastAPI with the model in-process and no batching: one model call per request."""
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    model = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=threads))
    app = FastAPI()

    @app.post("/embed")
    async def embed(request: Request) -> dict[str, Any]:
        body = await request.json()
        result = await model.embed(body["texts"])
        vectors: list[Any] = result.vectors
        if body.get("encoding_format") == "base64":
            vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        return {"vectors": vectors, "truncated": result.truncated, "model_version": result.version.key}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    return app


@contextlib.contextmanager
def plain_server(threads: int) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.embed", "plain-server", str(port), str(threads)],
        cwd=Path(__file__).resolve().parents[1],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise TimeoutError("plain FastAPI server did not start")
        yield f"{base}/embed"
    finally:
        stop(proc)


# --- Serve -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_embedder(threads: int, user_config: dict[str, Any], encode_batch_size: int = 64) -> Iterator[str]:
    """The Embedder deployment alone on a fresh local Ray; yields its HTTP URL."""
    from deployments.serve_env import apply_serve_env_defaults

    apply_serve_env_defaults()  # the app's own Serve tuning, as `hybridmem run` uses it
    import ray
    from ray import serve

    from deployments.embedder import Embedder

    port = _free_port()
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        logging_level=logging.WARNING,
        # Ray starts workers at nice 15; the plain server and the in-process model run at 0. On a shared
        # machine that alone halves the replica's CPU share, so compare at equal priority.
        _system_config={"worker_niceness": 0},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = {
            "embedding": {
                "cache_enabled": False,
                "cpu_threads": threads,
                "encode_batch_size": encode_batch_size,
            }
        }
        app = Embedder.options(  # type: ignore[attr-defined]
            num_replicas=1, user_config=user_config, ray_actor_options={"num_cpus": 1, "num_gpus": 0}
        ).bind(settings)
        serve.run(app, name="bench-embedder", route_prefix="/embed")
        yield f"http://127.0.0.1:{port}/embed"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


# --- cache -------------------------------------------------------------------------------------------


def measure_cache_hits(texts: list[str], threads: int, redis_url: str) -> float:
    """All-hit throughput of CachedEmbedder (real Redis, real model behind it), 32 texts per call."""
    import redis.asyncio as aioredis

    from core.embedding.cache import CachedEmbedder, RedisEmbeddingCache
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    model = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=threads))
    prefix = f"hmbench:{uuid.uuid4().hex[:10]}"

    async def go() -> float:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        try:
            cached = CachedEmbedder(model, RedisEmbeddingCache(client, prefix=prefix, ttl_s=600))
            chunks = [texts[i : i + BATCH_TEXTS] for i in range(0, len(texts), BATCH_TEXTS)]
            for chunk in chunks:  # fill
                await cached.embed(chunk)
            calls_before = model.model_calls
            start = time.perf_counter()
            rounds = 3
            for _ in range(rounds):
                for chunk in chunks:
                    result = await cached.embed(chunk)
                    if result.cache_hits != len(chunk):
                        raise RuntimeError("cache benchmark expected only hits")
            elapsed = time.perf_counter() - start
            if model.model_calls != calls_before:
                raise RuntimeError("a cache hit reached the model")
            return rounds * len(texts) / elapsed
        finally:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i : i + 1000])
            await client.aclose()

    try:
        return asyncio.run(go())
    finally:
        model.close()


# --- entry point -------------------------------------------------------------------------------------


def run(
    json: bool = False,
    *,
    clients: int | None = None,
    batch: int | None = None,
    texts: int = 1024,
    single_requests: int = 256,
    rounds: int = 2,
    threads: int | None = None,
    redis_url: str | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    """Measure every figure; served, plain and raw runs alternate so machine noise hits them alike.

    Both servers stay up for the whole run (the idle one costs ~nothing); each figure is the best of
    ``rounds``. All contenders use the same torch thread count (default: all cores, as the product).
    """
    del json  # printing is the CLI's job
    n_threads = threads or _threads()
    n_clients = clients or SINGLE_CLIENTS
    per_request = batch or BATCH_TEXTS
    corpus = load_texts(texts + single_requests + 64)
    batch_texts, single_texts = corpus[:texts], corpus[texts : texts + single_requests]
    warm = [{"texts": [t]} for t in corpus[texts + single_requests :]]
    singles = [{"texts": [t]} for t in single_texts]
    batches = [{"texts": batch_texts[i : i + per_request]} for i in range(0, len(batch_texts), per_request)]

    if threads is None:  # every contender gets the thread count that suits the raw model best
        by_threads = {t: measure_raw(batch_texts[:256], t) for t in sorted({1, n_threads})}
        n_threads = max(by_threads, key=lambda t: by_threads[t][0])
        raw_bs = by_threads[n_threads][1]
    else:
        _, raw_bs = measure_raw(batch_texts[:256], n_threads)
    # A served batch groups many callers (max_batch); the model then length-sorts it and runs
    # micro-batches of raw_bs, as the raw figure does: little padding, the model never starved.
    max_batch = SERVE_MAX_BATCH
    user_config = {"max_batch_size": max_batch, "batch_wait_timeout_s": 0.005}
    raw_runs: list[float] = []
    served_runs: list[float] = []
    single_runs: list[float] = []
    plain_runs: list[float] = []
    with (
        plain_server(n_threads) as plain_url,
        serve_embedder(n_threads, user_config, encode_batch_size=raw_bs) as serve_url,
    ):
        drive(plain_url, warm, n_clients)
        drive(serve_url, warm, n_clients)
        for _ in range(rounds):
            raw_runs.append(measure_raw(batch_texts, n_threads, (raw_bs,))[0])
            served_runs.append(
                drive(serve_url, batches, clients=max(2, max_batch // per_request)) * per_request
            )
            single_runs.append(drive(serve_url, singles, n_clients))
            plain_runs.append(drive(plain_url, singles, n_clients))
            log.info(
                "round: raw %.1f served %.1f single %.1f plain %.1f",
                raw_runs[-1],
                served_runs[-1],
                single_runs[-1],
                plain_runs[-1],
            )
        # The replica's cache is off, so texts sent in the rounds cost the model the same again.
        under_bulk = queries_under_bulk(serve_url, batch_texts, single_texts)

    url_redis = redis_url or os.environ.get("HYBRIDMEM_REDIS__URL") or "redis://127.0.0.1:6379"
    cache_hit = measure_cache_hits(batch_texts, n_threads, url_redis)
    backends = compare_backends(threads=n_threads)
    raw, served_batch, single, plain = max(raw_runs), max(served_runs), max(single_runs), max(plain_runs)
    return {
        "raw_sent_per_s": round(raw, 1),
        "raw_best_batch_size": raw_bs,
        "served_batch_sent_per_s": round(served_batch, 1),
        "ratio_batch": round(served_batch / raw, 3),
        "single_req_per_s": round(single, 1),
        "plain_fastapi_req_per_s": round(plain, 1),
        "ratio_single": round(single / plain, 3),
        "cache_hit_sent_per_s": round(cache_hit, 1),
        "ratio_cache": round(cache_hit / raw, 2),
        "texts_per_batch_request": per_request,
        "serve_max_batch_size": max_batch,
        "single_clients": n_clients,
        "rounds": rounds,
        "cpu_threads": n_threads,
        "cpus": os.cpu_count(),
        "query_under_bulk": under_bulk,
        "runs": {"raw": raw_runs, "served": served_runs, "single": single_runs, "plain": plain_runs},
        **backends,
    }


def _main(argv: list[str]) -> int:
    if argv[:1] == ["plain-server"]:
        import uvicorn

        port, threads = int(argv[1]), int(argv[2])
        uvicorn.run(plain_app(threads), host="127.0.0.1", port=port, log_level="warning")
        return 0
    if argv[:1] == ["backends"]:
        result = compare_backends(threads=_threads(), quality="--quality" in argv)
        sys.stdout.write(jsonlib.dumps(result) + "\n")
        return 0
    result = run(json="--json" in argv)
    sys.stdout.write(jsonlib.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
