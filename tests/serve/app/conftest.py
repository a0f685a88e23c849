"""One running app (real Ray + Serve, real Redis and Postgres) for every module of this package.

Starting an app costs about half a minute of a 2-core machine and stopping it several seconds more, so
the HTTP-level modules share one: tenants and keys are the app's, and every test writes under ids,
sessions and agents of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import ALL_SCOPES, ApiKeySpec
from deployments.local import local_app
from tests.conftest import new_key_prefix
from tests.serve.conftest import AppServer


@pytest.fixture(scope="package")
def app_server(
    redis_url: str, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """The whole app on a local Ray, shared by every module of this package (each uses ids of its own)."""
    data_dir = tmp_path_factory.mktemp("hm-app")
    tenants = {"a": f"tenant-a-{uuid.uuid4().hex[:8]}", "b": f"tenant-b-{uuid.uuid4().hex[:8]}"}
    raw = {
        "a_rw": (f"key-a-rw-{uuid.uuid4().hex}", tenants["a"], ["memory:read", "memory:write"]),
        "a_ro": (f"key-a-ro-{uuid.uuid4().hex}", tenants["a"], ["memory:read"]),
        "a_admin": (f"key-a-admin-{uuid.uuid4().hex}", tenants["a"], list(ALL_SCOPES)),
        "a_wo": (f"key-a-wo-{uuid.uuid4().hex}", tenants["a"], ["memory:write"]),
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
