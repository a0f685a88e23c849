"""Consolidation triggers on a real app: the scheduler's interval, and `hybridmem consolidate --wait`
through Ray's Job Submission API (the job drives the app's Embedder and the Retriever, the owner of the
embedded engine)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import ALL_SCOPES, ApiKeySpec
from deployments.local import local_app
from tests.conftest import new_key_prefix

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def scheduled_app(
    redis_url: str, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import ray

    data_dir: Path = tmp_path_factory.mktemp("hm-sched")
    key = f"key-{uuid.uuid4().hex}"
    prefix = new_key_prefix()
    settings: dict[str, Any] = {
        "env": "test",
        "data_dir": str(data_dir),
        "redis": {"url": redis_url, "key_prefix": prefix},
        "postgres": {"dsn": pg_database, "pool_max_size": 4},
        "qdrant": {"backend": "edge", "path": str(data_dir / "qdrant")},
        "consolidation": {"enabled": True, "interval_s": 2.0},
        "auth": {"api_keys": [ApiKeySpec(key_sha256=ApiKeySpec.hash_key(key), tenant_id=f"t-{prefix}",
                                         scopes=list(ALL_SCOPES)).model_dump()]},
    }  # fmt: skip
    env = {
        "HYBRIDMEM_REDIS__URL": redis_url,
        "HYBRIDMEM_REDIS__KEY_PREFIX": prefix,
        "HYBRIDMEM_POSTGRES__DSN": pg_database,
        "HYBRIDMEM_QDRANT__BACKEND": "edge",
        "HYBRIDMEM_QDRANT__PATH": str(data_dir / "qdrant"),
        "HYBRIDMEM_DATA_DIR": str(data_dir),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with local_app(settings, include_dashboard=True) as base_url:
            yield {
                "base_url": base_url,
                "key": key,
                "dashboard": "http://" + ray._private.worker.get_dashboard_url(),
            }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _client(app: dict[str, Any]) -> httpx.Client:
    return httpx.Client(
        base_url=app["base_url"], headers={"Authorization": f"Bearer {app['key']}"}, timeout=30
    )


def _wait_for(predicate: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def test_scheduler_consolidates_on_its_interval(scheduled_app: dict[str, Any]) -> None:
    session = f"s-{uuid.uuid4().hex[:6]}"
    with _client(scheduled_app) as c:
        r = c.post("/v1/episodes", json={"agent_id": "a", "session_id": session, "content": "scheduled turn"})
        assert r.status_code == 201
        eid = r.json()["id"]

        def consolidated() -> bool:
            ep = c.get(f"/v1/episodes/{eid}").json()
            return ep["consolidated_at"] is not None

        _wait_for(consolidated)
        runs = c.get("/v1/admin/consolidations", params={"limit": 50}).json()
        assert any(run["trigger"] == "schedule" and run["status"] == "succeeded" for run in runs)


def test_cli_submits_a_ray_job_and_follows_it(scheduled_app: dict[str, Any]) -> None:
    from core.consolidation.runs import RunRecord
    from deployments.ops_cli import submit_consolidation

    session = f"s-{uuid.uuid4().hex[:6]}"
    with _client(scheduled_app) as c:
        eid = c.post(
            "/v1/episodes", json={"agent_id": "a", "session_id": session, "content": "job turn"}
        ).json()["id"]
    code = submit_consolidation(
        address=scheduled_app["dashboard"], partitions=None, parallelism=2, wait=True, timeout_s=240
    )
    assert code == 0
    with _client(scheduled_app) as c:
        # A partition the scheduler held at that moment is skipped by the job (advisory lock) and
        # consolidated by whichever run comes next: either way the episode ends up consolidated once.
        _wait_for(lambda: c.get(f"/v1/episodes/{eid}").json()["consolidated_at"] is not None)
        runs = [
            RunRecord.model_validate(r)
            for r in c.get("/v1/admin/consolidations", params={"limit": 50}).json()
        ]
    assert any(r.status == "succeeded" and r.trigger != "schedule" for r in runs)
