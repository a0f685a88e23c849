"""Embedder deployment: one model per replica, @serve.batch across callers, Redis cache in front.

Callers hold a :class:`HandleEmbedder` (a :class:`~core.embedding.types.TextEmbedder` over the handle).
``user_config`` (``max_batch_size``, ``batch_wait_timeout_s``) retunes batching at run time.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from core import metrics  # module reference: Serve pickles deployment classes by value
from core.embedding.cache import CachedEmbedder, RedisEmbeddingCache
from core.embedding.loader import load_embedder
from core.embedding.types import EmbedResult, TextEmbedder, merge_results
from core.errors import EmbeddingError, InvalidInput
from core.models import ModelVersion
from core.settings import Settings, load_settings
from deployments.metrics_backend import init_observability
from deployments.remote import call

log = logging.getLogger(__name__)
REDIS_CLIENT_NAME = "hybridmem-embedder"  # CLIENT LIST shows whose connections these are

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.005
BULK_QUIET_S = 1.0  # no short request for this long: bulk chunks go back to full batches
BULK_RATE_WINDOW = 16  # recent model calls that set the texts/s a bulk chunk is sized by


def _count_texts(requests: list[list[str]]) -> int:
    """@serve.batch sizes a batch in texts, not requests: max_batch_size bounds one model call."""
    return sum(len(texts) for texts in requests)


def bulk_chunk_size(recent: Sequence[tuple[int, int, float]], *, cap: int, slice_s: float, busy: bool) -> int:
    """Texts in a bulk chunk: about ``slice_s`` of model time while short requests are coming, else ``cap``.

    ``recent`` holds (requests, texts, seconds) of recent model calls; their texts per second set the
    size. ``cap`` is one model batch (at most one queue batch); with no history the chunk is ``cap``.
    """
    seconds = sum(s for _, _, s in recent)
    if not busy or seconds <= 0:
        return cap
    rate = sum(n for _, n, _ in recent) / seconds
    return max(1, min(cap, int(rate * slice_s)))


class _BatchedModel:
    """TextEmbedder view of the replica's model: short requests share batches, long ones take turns.

    A request of at most one model batch (``encode_batch_size``, at most ``max_batch_size``) joins the
    @serve.batch queue, where concurrent callers' texts share one model call. A longer one (a
    consolidation pass, a re-embed, a large ``/v1/embeddings`` call) is bulk work: it runs one chunk at
    a time behind a replica-wide gate, each chunk sized to take about ``bulk_slice_ms`` while short
    requests are coming, and it waits while they are pending. A query that arrives during bulk work
    then waits for about one slice, not for everything queued before it.
    """

    def __init__(self, owner: Embedder) -> None:
        self._owner = owner

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        owner = self._owner
        with metrics.METRICS.embedding_queue_depth.track(len(texts)):
            if len(texts) <= owner.model_batch_texts():
                owner._short_pending += 1
                owner._short_seen_at = time.monotonic()
                owner._short_idle.clear()
                try:
                    parts = [await owner._embed_batch(list(texts))]
                finally:
                    owner._short_pending -= 1
                    if not owner._short_pending:
                        owner._short_idle.set()
            else:
                parts = await owner._embed_bulk(texts)
        return merge_results(parts, await owner._model.model_version())

    async def model_version(self) -> ModelVersion:
        return await self._owner._model.model_version()


@serve.deployment(
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    health_check_period_s=10,
    health_check_timeout_s=60,
)
class Embedder:
    """Serve replica owning one embedding model (local sentence-transformers, else the Ollama fallback)."""

    async def __init__(self, settings: dict[str, Any] | Settings | None = None) -> None:  # type: ignore[misc]
        self._settings = settings if isinstance(settings, Settings) else load_settings(settings)
        init_observability(self._settings)
        emb = self._settings.embedding
        self._model: TextEmbedder = await load_embedder(emb)
        self._batcher: Any = cast(Any, self._embed_batch)  # the @serve.batch wrapper owns the setters
        self.max_batch_size = emb.max_batch_size
        self.batch_wait_timeout_s = emb.batch_wait_timeout_s
        self._batcher.set_max_batch_size(emb.max_batch_size)
        self._batcher.set_batch_wait_timeout_s(emb.batch_wait_timeout_s)
        self._recent_batches: collections.deque[tuple[int, int, float]] = collections.deque(maxlen=512)
        self._bulk_gate = asyncio.Lock()  # one chunk of bulk work at a time in front of the model
        self._bulk_slice_s = emb.bulk_slice_ms / 1000
        self._short_pending = 0  # short requests waiting for (or in) a model call
        self._short_idle = asyncio.Event()
        self._short_idle.set()
        self._short_seen_at = -math.inf  # when the last short request came (time.monotonic())
        self._redis: aioredis.Redis | None = None
        self._front: TextEmbedder = _BatchedModel(self)
        if emb.cache_enabled and self._settings.redis.url:
            self._redis = aioredis.Redis.from_url(
                self._settings.redis.url,
                socket_timeout=self._settings.redis.socket_timeout_s,
                socket_connect_timeout=self._settings.redis.socket_timeout_s,
                client_name=re.sub(
                    r"[^\w:.-]", "_", f"{REDIS_CLIENT_NAME}:{self._settings.redis.key_prefix}"
                ),
            )
            cache = RedisEmbeddingCache(
                self._redis, prefix=self._settings.redis.key_prefix, ttl_s=emb.cache_ttl_s
            )
            self._front = CachedEmbedder(self._front, cache)
        version = await self._model.model_version()
        log.info("Embedder replica ready", extra={"model": version.key, "cache": self._redis is not None})

    async def __del__(self) -> None:
        """Serve's replica shutdown hook: the cache's Redis client and the model's own resources (the
        Ollama fallback's HTTP client, say) are closed, not left to the process's exit."""
        if self._redis is not None:
            await self._redis.aclose()
        aclose = getattr(self._model, "aclose", None)
        close = getattr(self._model, "close", None)
        if aclose is not None:
            await aclose()
        elif close is not None:
            await asyncio.to_thread(close)  # waits for a batch in flight: off the event loop

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Retune batching at run time (``user_config`` in serve_config.yaml or ``.options()``)."""
        if "max_batch_size" in user_config:
            size = int(user_config["max_batch_size"])
            if size < 1:
                raise ValueError("max_batch_size must be >= 1")
            self.max_batch_size = size
            self._batcher.set_max_batch_size(size)
        if "batch_wait_timeout_s" in user_config:
            wait = float(user_config["batch_wait_timeout_s"])
            if wait < 0:
                raise ValueError("batch_wait_timeout_s must be >= 0")
            self.batch_wait_timeout_s = wait
            self._batcher.set_batch_wait_timeout_s(wait)

    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S,
        batch_size_fn=_count_texts,
    )
    async def _embed_batch(self, requests: list[list[str]]) -> list[EmbedResult]:
        """One model call for every text queued by concurrent callers; results split back per caller."""
        flat = [t for texts in requests for t in texts]
        started = time.perf_counter()
        result = await self._model.embed(flat)
        self._recent_batches.append((len(requests), len(flat), time.perf_counter() - started))
        out: list[EmbedResult] = []
        start = 0
        counts = result.token_counts or [0] * len(flat)
        for texts in requests:
            end = start + len(texts)
            out.append(
                EmbedResult(
                    vectors=result.vectors[start:end],
                    truncated=result.truncated[start:end],
                    version=result.version,
                    token_counts=counts[start:end],
                )
            )
            start = end
        return out

    def model_batch_texts(self) -> int:
        """One model batch: the model's ``encode_batch_size``, at most ``max_batch_size``; longer is bulk."""
        model_batch = getattr(self._model, "encode_batch_size", None)
        return min(self.max_batch_size, model_batch) if isinstance(model_batch, int) else self.max_batch_size

    def bulk_chunk_texts(self) -> int:
        """Texts in the next bulk chunk (:func:`bulk_chunk_size` over this replica's recent model calls)."""
        return bulk_chunk_size(
            list(itertools.islice(reversed(self._recent_batches), BULK_RATE_WINDOW)),
            cap=self.model_batch_texts(),
            slice_s=self._bulk_slice_s,
            busy=time.monotonic() - self._short_seen_at <= BULK_QUIET_S,
        )

    async def _embed_bulk(self, texts: Sequence[str]) -> list[EmbedResult]:
        """A long request, chunk by chunk, giving way to short requests between chunks.

        The model runs its calls one at a time in arrival order. Before each chunk the bulk caller waits
        (up to one slice, so it is never starved) until no short request is pending. Concurrent bulk
        requests alternate chunks (the gate is a FIFO lock).
        """
        parts: list[EmbedResult] = []
        start = 0
        while start < len(texts):
            async with self._bulk_gate:
                if self._short_pending:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._short_idle.wait(), self._bulk_slice_s)
                chunk = list(texts[start : start + self.bulk_chunk_texts()])
                started = time.perf_counter()
                parts.append(await self._model.embed(chunk))
                self._recent_batches.append((1, len(chunk), time.perf_counter() - started))
            start += len(chunk)
        return parts

    async def embed(self, texts: list[str]) -> EmbedResult:
        """Embed ``texts`` (any number: split into batch-sized chunks, cache hits answered from Redis)."""
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("texts", "must be a list of strings")
        return await self._front.embed(texts)

    async def model_version(self) -> ModelVersion:
        return await self._model.model_version()

    async def info(self) -> dict[str, Any]:
        """Model identity and window (like TEI's /info) plus the live batching settings."""
        model_info = getattr(self._model, "info", None)
        if model_info is not None:
            base: dict[str, Any] = dict(await model_info())
        else:
            version = await self._model.model_version()
            base = {**version.model_dump(), "key": version.key, "max_seq_length": None}
        cache_stats = self._front.stats() if isinstance(self._front, CachedEmbedder) else None
        return {
            **base,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "cache": cache_stats,
        }

    async def batch_stats(self) -> dict[str, Any]:
        """Recently observed batches: (requests, texts, model seconds) per model call; tests and tuning."""
        batches = list(self._recent_batches)
        return {
            "batches": batches,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }

    async def __call__(self, request: Request) -> dict[str, Any]:
        """Bare HTTP entry for benchmarks (``POST {"texts": [...], "encoding_format": "float"|"base64"}``).

        The product API is the Ingress's ``/v1/embeddings``; base64 is little-endian float32 per vector.
        """
        body = await request.json()
        texts = body.get("texts") if isinstance(body, dict) else None
        if not isinstance(texts, list) or not texts:
            raise InvalidInput("texts", "must be a non-empty list of strings")
        result = await self.embed(texts)
        vectors: list[Any] = result.vectors
        if body.get("encoding_format") == "base64":
            vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        return {
            "vectors": vectors,
            "truncated": result.truncated,
            "model_version": result.version.key,
            "cache_hits": result.cache_hits,
        }

    async def check_health(self) -> None:
        """Ready only when the model really embeds (bypasses the cache and the batch queue)."""
        started = time.perf_counter()
        result = await asyncio.wait_for(self._model.embed(["health check"]), timeout=30)
        if len(result.vectors) != 1 or len(result.vectors[0]) != result.version.dimension:
            raise EmbeddingError("health check embedding has the wrong shape")
        log.debug("embedder health check ok in %.3fs", time.perf_counter() - started)


class HandleEmbedder:
    """A :class:`TextEmbedder` over the Embedder deployment's handle (for Retriever, Ingress, jobs)."""

    def __init__(self, handle: DeploymentHandle[Any], *, timeout_s: float = 60.0) -> None:
        self._handle = handle
        self._timeout_s = timeout_s
        self._version: ModelVersion | None = None

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        try:
            async with asyncio.timeout(self._timeout_s):
                result: EmbedResult = await call("embedder", self._handle.embed.remote(list(texts)))
        except TimeoutError as exc:
            raise EmbeddingError(
                f"Embedder.embed of {len(texts)} texts did not answer within {self._timeout_s:.0f} s"
            ) from exc
        self._version = result.version
        return result

    async def model_version(self) -> ModelVersion:
        if self._version is None:
            async with asyncio.timeout(self._timeout_s):
                version: ModelVersion = await call("embedder", self._handle.model_version.remote())
            self._version = version
        return self._version

    async def info(self) -> dict[str, Any]:
        async with asyncio.timeout(self._timeout_s):
            info: dict[str, Any] = await call("embedder", self._handle.info.remote())
        return info


def build_embedder_app(args: dict[str, Any]) -> Application:
    """The Embedder alone as an app (``import_path: deployments.embedder:build_embedder_app``)."""
    app: Application = cast(Any, Embedder).bind(args.get("settings"))
    return app
