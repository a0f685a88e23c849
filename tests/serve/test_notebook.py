"""examples/walkthrough.ipynb runs headless end to end (in-process app), so the notebook cannot rot."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nbformat
import pytest
import redis.asyncio as aioredis
from nbclient import NotebookClient

from tests.conftest import new_key_prefix

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "walkthrough.ipynb"
REPO_ROOT = NOTEBOOK.parents[1]

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
async def empty_database(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A database of its own (the notebook migrates it), so its consolidation sees only its episodes."""
    name = f"hm_test_nb_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(postgres_admin_dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_walkthrough_notebook_runs_headless(
    redis_url: str, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = new_key_prefix("nb")
    for name in [n for n in os.environ if n.startswith("HYBRIDMEM_")]:
        monkeypatch.delenv(name)
    # The kernel inherits this environment: the notebook starts its own app on these servers.
    monkeypatch.setenv("HYBRIDMEM_REDIS__URL", redis_url)
    monkeypatch.setenv("HYBRIDMEM_POSTGRES__DSN", empty_database)
    monkeypatch.setenv("HYBRIDMEM_REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        await NotebookClient(
            nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}
        ).async_execute()
    finally:
        client = aioredis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "every plot cell renders a figure"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "replay stored 0" in text
    assert "succeeded" in text
