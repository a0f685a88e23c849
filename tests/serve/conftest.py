"""A real local Ray + Serve running the whole hybridmem app, for HTTP tests.

Module-scoped: each module that uses ``app_server`` gets a fresh Ray instance (and shuts it down), so
modules that build their own clusters (multi-node tests) never collide with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from core.settings import ALL_SCOPES, ApiKeySpec
from deployments.local import free_port, local_app, wait_ready  # noqa: F401  (re-exported for tests)
from tests.conftest import new_key_prefix


@dataclass
class AppServer:
    base_url: str
    keys: dict[str, str]
    settings: dict[str, Any]
    tenants: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)


@pytest.fixture(scope="module")
def app_server(
    redis_url: str, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    data_dir = tmp_path_factory.mktemp("hm-app")
    tenants = {"a": f"tenant-a-{uuid.uuid4().hex[:8]}", "b": f"tenant-b-{uuid.uuid4().hex[:8]}"}
    raw = {
        "a_rw": (f"key-a-rw-{uuid.uuid4().hex}", tenants["a"], ["memory:read", "memory:write"]),
        "a_ro": (f"key-a-ro-{uuid.uuid4().hex}", tenants["a"], ["memory:read"]),
        "a_admin": (f"key-a-admin-{uuid.uuid4().hex}", tenants["a"], list(ALL_SCOPES)),
        "b_rw": (f"key-b-rw-{uuid.uuid4().hex}", tenants["b"], ["memory:read", "memory:write"]),
    }
    settings: dict[str, Any] = {
        "env": "test",
        "data_dir": str(data_dir),
        "redis": {"url": redis_url, "key_prefix": new_key_prefix()},
        "postgres": {"dsn": pg_database, "pool_max_size": 4},
        "qdrant": {"backend": "edge", "path": str(data_dir / "qdrant")},
        "consolidation": {"enabled": False},
        "auth": {
            "api_keys": [
                ApiKeySpec(key_sha256=ApiKeySpec.hash_key(k), tenant_id=t, scopes=s, name=n).model_dump()  # type: ignore[arg-type]
                for n, (k, t, s) in raw.items()
            ]
        },
    }
    with local_app(settings) as base_url:
        yield AppServer(
            base_url=base_url, keys={n: v[0] for n, v in raw.items()}, settings=settings, tenants=tenants
        )
