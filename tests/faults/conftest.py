"""The fault suite's stack: its own Valkey and Postgres (stoppable), migrated, and the real app on local Ray.

The servers listen on loopback ports of their own, so stopping them never touches the shared test servers.
The summary table is printed at the end of the session; ``HYBRIDMEM_FAULTS_JSON=path`` also saves it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import migrate
from core.settings import ALL_SCOPES, ApiKeySpec
from deployments.local import local_app
from tests.faults import report
from tests.faults.servers import FaultStack, PostgresProcess, ValkeyProcess

N_PARTITIONS = 4


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    root = tmp_path_factory.mktemp("faults")
    postgres = PostgresProcess(root / "pgdata")
    valkey = ValkeyProcess(root / "valkey")
    try:
        postgres.init()
        postgres.start()
        valkey.start()
        asyncio.run(migrate.upgrade(postgres.dsn()))
        key, tenant = f"fault-key-{uuid.uuid4().hex}", f"fault-tenant-{uuid.uuid4().hex[:8]}"
        settings: dict[str, Any] = {
            "env": "test",
            "data_dir": str(root / "app"),
            "redis": {"url": valkey.url, "key_prefix": "hmfault"},
            "postgres": {"dsn": postgres.dsn(), "pool_max_size": 4},
            "qdrant": {"backend": "edge", "path": str(root / "qdrant")},
            "consolidation": {"enabled": False, "n_partitions": N_PARTITIONS, "parallelism": 2},
            "auth": {
                "api_keys": [
                    ApiKeySpec(
                        key_sha256=ApiKeySpec.hash_key(key), tenant_id=tenant, scopes=list(ALL_SCOPES)
                    ).model_dump()
                ]
            },
        }
        with local_app(settings) as base_url:
            yield FaultStack(
                base_url=base_url, key=key, tenant=tenant, valkey=valkey, postgres=postgres, settings=settings
            )
    finally:
        valkey.stop(crash=False)
        postgres.remove()


CRASH_TESTS = "tests/integration/test_consolidation_faults.py"  # consolidation crashes, in make test-faults


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for outcome in ("passed", "failed"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "") == "call" and str(getattr(rep, "nodeid", "")).startswith(CRASH_TESTS):
                report.CRASHES[outcome] += 1
    if not report.ROWS and not any(report.CRASHES.values()):
        return
    terminalreporter.section("fault suite")
    for line in report.table():
        terminalreporter.write_line(line)
    for row in report.ROWS.values():
        if row.note:
            terminalreporter.write_line(f"{row.fault}: {row.note}")
    if any(report.CRASHES.values()):
        terminalreporter.write_line(
            f"consolidation crash at each step, then rerun ({CRASH_TESTS}): "
            f"{report.CRASHES['passed']} passed, {report.CRASHES['failed']} failed"
        )
    path = os.environ.get(report.JSON_ENV)
    if path:
        report.write_json(Path(path))
        terminalreporter.write_line(f"fault summary written to {path}")
