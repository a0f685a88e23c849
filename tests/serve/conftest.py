"""Serve tests: helpers shared by the modules here and by ``tests/serve/app/``.

The modules under ``tests/serve/app/`` share one running app (``app_server``, package-scoped: started
once for them, stopped when they are done); the modules here start their own clusters and apps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from deployments.local import free_port, local_app, wait_ready  # noqa: F401  (re-exported for tests)


@dataclass
class AppServer:
    base_url: str
    keys: dict[str, str]
    settings: dict[str, Any]
    tenants: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
