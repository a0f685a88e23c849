"""Redis embedding cache: keyed by model version + content hash, one round trip per lookup batch.

Value layout: the vector as little-endian float32 (``numpy.tobytes``), then a 5-byte trailer
(``<BI``: truncated flag, token count) so a hit answers exactly what the model would have.
Size is bounded by the TTL (and by the server's ``maxmemory`` policy in production).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.embedding.types import EmbedResult, TextEmbedder
from core.errors import EmbeddingError, StoreUnavailable
from core.metrics import METRICS
from core.models import ModelVersion

log = logging.getLogger(__name__)

_TRAILER = struct.Struct("<BI")


def content_hash(text: str) -> str:
    """SHA-256 hex of the UTF-8 text: the cache key's content part."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def pack_vector(vector: Sequence[float], *, truncated: bool, token_count: int) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes() + _TRAILER.pack(int(truncated), max(token_count, 0))


def unpack_vector(value: bytes, dimension: int) -> tuple[list[float], bool, int] | None:
    """(vector, truncated, token count), or None when the value does not have this dimension's layout."""
    if len(value) != dimension * 4 + _TRAILER.size:
        return None
    vector = np.frombuffer(value, dtype="<f4", count=dimension).tolist()
    truncated, token_count = _TRAILER.unpack_from(value, dimension * 4)
    return vector, bool(truncated), int(token_count)


class RedisEmbeddingCache:
    """Packed vectors in Redis under ``{prefix}:emb:{model version}:{content hash}`` with a TTL."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: int, timeout_s: float = 1.0) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s

    def key(self, version_key: str, digest: str) -> str:
        return f"{self._prefix}:emb:{version_key}:{digest}"

    async def get_many(self, version_key: str, hashes: Sequence[str]) -> list[bytes | None]:
        """Values for ``hashes`` in order (None: miss), in one MGET round trip."""
        if not hashes:
            return []
        keys = [self.key(version_key, h) for h in hashes]
        try:
            async with asyncio.timeout(self._timeout_s):
                values = await self._client.mget(keys)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable("redis", f"embedding cache read: {exc}") from exc
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def put_many(self, version_key: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store (hash, packed value) pairs with the TTL in one pipeline (no transaction)."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for digest, value in items:
            pipe.set(self.key(version_key, digest), value, ex=self._ttl_s)
        try:
            async with asyncio.timeout(self._timeout_s):
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable("redis", f"embedding cache write: {exc}") from exc


class CachedEmbedder:
    """A :class:`TextEmbedder` that answers from the cache and sends only misses to ``inner``.

    When Redis cannot be reached the cache is bypassed for ``retry_after_s`` (a warning is logged and
    ``bypassed`` counts it); embedding keeps working from the model.
    """

    def __init__(
        self, inner: TextEmbedder, cache: RedisEmbeddingCache, *, retry_after_s: float = 5.0
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._retry_after_s = retry_after_s
        self._version: ModelVersion | None = None
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.write_failures = 0

    async def model_version(self) -> ModelVersion:
        if self._version is None:
            self._version = await self._inner.model_version()
        return self._version

    def _cache_down(self, exc: StoreUnavailable, what: str) -> None:
        self._skip_until = time.monotonic() + self._retry_after_s
        log.warning("embedding cache bypassed (%s): %s", what, exc.message)

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        version = await self.model_version()
        if not texts:
            return EmbedResult(vectors=[], truncated=[], version=version)
        if time.monotonic() < self._skip_until:
            self.bypassed += 1
            return await self._inner.embed(texts)
        hashes = [content_hash(t) for t in texts]
        unique = list(dict.fromkeys(hashes))
        try:
            values = await self._cache.get_many(version.key, unique)
        except StoreUnavailable as exc:
            self.bypassed += 1
            self._cache_down(exc, "read")
            return await self._inner.embed(texts)

        found: dict[str, tuple[list[float], bool, int]] = {}
        for digest, value in zip(unique, values, strict=True):
            if value is not None and (entry := unpack_vector(value, version.dimension)) is not None:
                found[digest] = entry
        miss_hashes = [h for h in unique if h not in found]
        if miss_hashes:
            text_of = dict(zip(hashes, texts, strict=True))
            fresh = await self._inner.embed([text_of[h] for h in miss_hashes])
            if fresh.version.key != version.key:
                raise EmbeddingError(
                    f"model version changed under the cache: {version.key} → {fresh.version.key}"
                )
            counts = fresh.token_counts or [0] * len(miss_hashes)
            to_store: list[tuple[str, bytes]] = []
            for digest, vector, truncated, count in zip(
                miss_hashes, fresh.vectors, fresh.truncated, counts, strict=True
            ):
                found[digest] = (vector, truncated, count)
                to_store.append((digest, pack_vector(vector, truncated=truncated, token_count=count)))
            try:
                await self._cache.put_many(version.key, to_store)
            except StoreUnavailable as exc:
                self.write_failures += 1
                self._cache_down(exc, "write")

        miss_set = set(miss_hashes)
        hit_count = sum(1 for h in hashes if h not in miss_set)
        self.hits += hit_count
        self.misses += len(hashes) - hit_count
        METRICS.embedding_cache_hits_total.inc(hit_count)
        METRICS.embedding_cache_misses_total.inc(len(hashes) - hit_count)
        rows = [found[h] for h in hashes]
        return EmbedResult(
            vectors=[r[0] for r in rows],
            truncated=[r[1] for r in rows],
            version=version,
            cache_hits=hit_count,
            token_counts=[r[2] for r in rows],
        )

    async def info(self) -> dict[str, Any]:
        """The inner embedder's info (when it has one) plus this cache's counters."""
        inner_info = getattr(self._inner, "info", None)
        base: dict[str, Any] = dict(await inner_info()) if inner_info is not None else {}
        if not base:
            version = await self.model_version()
            base = {**version.model_dump(), "key": version.key}
        return {**base, "cache": self.stats()}

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bypassed": self.bypassed,
            "write_failures": self.write_failures,
        }
