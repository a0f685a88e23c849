"""The Embedder replica's shutdown hook (Serve calls ``__del__``) closes what the replica opened."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from deployments.embedder import REDIS_CLIENT_NAME, Embedder

pytestmark = pytest.mark.integration


def _names(admin: redis.Redis) -> set[str]:
    return {str(c.get("name")) for c in admin.client_list()}


async def test_shutdown_closes_the_cache_client_and_the_model(redis_url: str) -> None:
    prefix = f"hm-test-{uuid.uuid4().hex[:8]}"
    settings: dict[str, Any] = {
        "embedding": {"cpu_threads": 1},
        "redis": {"url": redis_url, "key_prefix": prefix},
    }
    cls: Any = Embedder.func_or_class  # the replica's class, as Serve runs it, without Serve
    replica = cls.__new__(cls)
    await replica.__init__(settings)
    admin = redis.Redis.from_url(redis_url)
    try:
        assert await replica._redis.ping()  # the cache's client connects (embedding needs Serve's batching)
        name = f"{REDIS_CLIENT_NAME}:{prefix}"
        assert name in _names(admin)  # the cache's connection, named for CLIENT LIST

        await replica.__del__()
        for _ in range(20):  # the server sees the close a moment later
            if name not in _names(admin):
                break
            await asyncio.sleep(0.1)
        assert name not in _names(admin)  # closed by the hook, in a process that lives on
        with pytest.raises(RuntimeError):  # the model's worker pool is shut down too
            replica._model._executor.submit(print)
        for key in admin.scan_iter(f"{prefix}*"):
            admin.delete(key)
    finally:
        admin.close()
