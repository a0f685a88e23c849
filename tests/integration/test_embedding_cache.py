"""Redis embedding cache against a real Redis and the real model: hits skip the model, values are equal."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import redis.asyncio as aioredis

from core.embedding.cache import CachedEmbedder, RedisEmbeddingCache, content_hash
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import EmbedResult
from core.models import ModelVersion
from core.settings import EmbeddingSettings

pytestmark = pytest.mark.integration


class CountingEmbedder:
    """A thin wrapper over the real model that records what reaches it."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.calls.append(list(texts))
        return await self.inner.embed(texts)

    async def model_version(self) -> ModelVersion:
        return await self.inner.model_version()


@pytest.fixture(scope="module")
def model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    yield embedder
    embedder.close()


TEXTS = [
    "Alice prefers window seats on long flights.",
    "The deployment failed because the GPU node ran out of memory.",
    "Bob's budget for the offsite is 12,000 EUR.",
    "word " * 600,  # truncated: the flag must survive the cache
]


async def test_second_call_is_all_hits_and_skips_the_model(
    model: SentenceTransformerEmbedder, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    counting = CountingEmbedder(model)
    cached = CachedEmbedder(counting, RedisEmbeddingCache(redis_client, prefix=key_prefix, ttl_s=60))

    first = await cached.embed(TEXTS)
    assert first.cache_hits == 0
    assert counting.calls == [TEXTS]

    second = await cached.embed(TEXTS)
    assert second.cache_hits == len(TEXTS)
    assert counting.calls == [TEXTS], "a cache hit must not reach the model"
    assert second.vectors == first.vectors  # exact: packed float32 round-trips bit for bit
    assert second.truncated == first.truncated == [False, False, False, True]
    assert second.version == first.version

    uncached = await model.embed(TEXTS)
    assert second.vectors == uncached.vectors
    assert cached.stats() == {"hits": 4, "misses": 4, "bypassed": 0, "write_failures": 0}

    keys = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:emb:*")]
    assert len(keys) == len(TEXTS)
    version = await model.model_version()
    assert all(version.key.encode() in k for k in keys)
    assert 0 < await redis_client.ttl(keys[0]) <= 60


async def test_only_misses_reach_the_model_and_duplicates_embed_once(
    model: SentenceTransformerEmbedder, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    counting = CountingEmbedder(model)
    cached = CachedEmbedder(counting, RedisEmbeddingCache(redis_client, prefix=key_prefix, ttl_s=60))
    await cached.embed(TEXTS[:2])
    mixed = [TEXTS[0], "a brand new sentence", TEXTS[1], "a brand new sentence"]
    result = await cached.embed(mixed)
    assert counting.calls[-1] == ["a brand new sentence"]
    assert result.cache_hits == 2
    assert result.vectors[1] == result.vectors[3]
    # Batch composition changes padding, so compare to the uncached model within float tolerance.
    np.testing.assert_allclose(result.vectors, (await model.embed(mixed)).vectors, atol=1e-5)


async def test_another_model_version_never_reads_these_entries(
    model: SentenceTransformerEmbedder, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    cache = RedisEmbeddingCache(redis_client, prefix=key_prefix, ttl_s=60)
    await CachedEmbedder(model, cache).embed(TEXTS[:1])
    version = await model.model_version()
    assert (await cache.get_many(version.key, [content_hash(TEXTS[0])]))[0] is not None
    assert await cache.get_many("other-model@000000000000", ["x"]) == [None]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_redis_down_bypasses_the_cache_and_still_embeds(model: SentenceTransformerEmbedder) -> None:
    dead = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{_closed_port()}", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        counting = CountingEmbedder(model)
        cached = CachedEmbedder(counting, RedisEmbeddingCache(dead, prefix="hmtest:dead", ttl_s=60))
        result = await cached.embed(TEXTS[:2])
        again = await cached.embed(TEXTS[:2])
    finally:
        await dead.aclose()
    assert result.vectors == (await model.embed(TEXTS[:2])).vectors
    assert result.cache_hits == again.cache_hits == 0
    assert len(counting.calls) == 2
    assert cached.stats()["bypassed"] == 2
