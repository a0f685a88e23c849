"""HNSW builds of the embedded Qdrant Edge store run in a child process and are swapped in without loss.

Real shards on disk and a real child process; faults are injected by replacing the child's command.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import StoreUnavailable
from core.stores import edge_build
from core.stores.edge_index import EdgeVectorIndex
from tests.contract.test_vector_index import V1, point, qdrant_settings

DIM = V1.dimension


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


SETTINGS = qdrant_settings()


async def open_index(root: Path) -> EdgeVectorIndex:
    return await EdgeVectorIndex.open(root, settings=SETTINGS, optimize_after_points=None)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith((edge_build.BUILD_SUFFIX, ".old")))


async def test_writes_during_a_build_are_replayed_and_searches_keep_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.stores.edge_index")
    idx = await open_index(tmp_path)
    try:
        name = await idx.ensure_collection(V1)
        base = vectors(3000, 1)
        await idx.upsert([point(f"t{i % 2}", f"e{i}", base[i].tolist()) for i in range(3000)])

        build = asyncio.create_task(idx.optimize())
        extra = vectors(2000, 2)
        written: list[int] = []
        deleted: list[str] = []
        searches = 0
        while not build.done() and len(written) < len(extra):
            i = len(written)
            await idx.upsert([point("t0", f"x{i}", extra[i].tolist())])
            written.append(i)
            if i % 10 == 0 and 2 * i < len(base):  # delete an old point while the copy is being built
                await idx.delete_by_source(tenant_id="t0", source_ids=[f"e{2 * i}"])
                deleted.append(f"e{2 * i}")
            hits = await idx.search(base[1].tolist(), tenant_id="t1", k=1)
            assert [h.payload["source_ids"] for h in hits] == [["e1"]]
            searches += 1
        await build
        assert written and searches, "the build finished before anything ran beside it"
        replayed = [int(m) for m in re.findall(r"(\d+) writes replayed", caplog.text)]
        assert replayed and replayed[0] > 0

        info = await idx.info()
        assert info["points"] == 3000 + len(written) - len(deleted)
        assert leftovers(tmp_path) == []
        for i in written[-5:] + written[:5]:
            hits = await idx.search(extra[i].tolist(), tenant_id="t0", k=1)
            assert hits[0].payload["source_ids"] == [f"x{i}"]
        for source in deleted:
            j = int(source[1:])
            hits = await idx.search(base[j].tolist(), tenant_id="t0", k=1)
            assert hits[0].payload["source_ids"] != [source]
    finally:
        await idx.close()

    reopened = await open_index(tmp_path)
    try:
        assert (await reopened.info(name))["points"] == 3000 + len(written) - len(deleted)
    finally:
        await reopened.close()


async def test_a_failed_build_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = await open_index(tmp_path)
    try:
        await idx.ensure_collection(V1)
        vs = vectors(300, 3)
        await idx.upsert([point("t", f"e{i}", vs[i].tolist()) for i in range(200)])
        monkeypatch.setattr(edge_build, "BUILD_COMMAND", (sys.executable, "-c", "import sys; sys.exit(3)"))
        with pytest.raises(StoreUnavailable, match="exited with 3"):
            await idx.optimize()
        assert leftovers(tmp_path) == []
        await idx.upsert([point("t", f"e{i}", vs[i].tolist()) for i in range(200, 300)])
        assert await idx.count() == 300

        monkeypatch.undo()
        assert await idx.optimize() in (True, False)
        info = await idx.info()
        assert info["points"] == 300
        hits = await idx.search(vs[250].tolist(), tenant_id="t", k=1)
        assert hits[0].payload["source_ids"] == ["e250"]
    finally:
        await idx.close()


async def test_close_stops_a_running_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idx = await open_index(tmp_path)
    vs = vectors(100, 4)
    await idx.ensure_collection(V1)
    await idx.upsert([point("t", f"e{i}", vs[i].tolist()) for i in range(100)])
    monkeypatch.setattr(edge_build, "BUILD_COMMAND", (sys.executable, "-c", "import time; time.sleep(120)"))
    build = asyncio.create_task(idx.optimize())
    while not leftovers(tmp_path):
        await asyncio.sleep(0.05)
    await asyncio.wait_for(idx.close(), timeout=60)
    with pytest.raises(asyncio.CancelledError):
        await build
    assert leftovers(tmp_path) == []

    reopened = await open_index(tmp_path)
    try:
        assert await reopened.count() == 100
    finally:
        await reopened.close()


@pytest.mark.parametrize("live_dir_present", [False, True])
async def test_an_interrupted_swap_is_recovered_on_open(tmp_path: Path, live_dir_present: bool) -> None:
    idx = await open_index(tmp_path)
    vs = vectors(50, 5)
    name = await idx.ensure_collection(V1)
    await idx.upsert([point("t", f"e{i}", vs[i].tolist()) for i in range(50)])
    await idx.close()

    build = edge_build.build_dir(tmp_path, name)
    build.mkdir()
    (build / "segment-junk").write_text("half-built")
    if live_dir_present:  # crashed after the swap, before the old directory was removed
        (tmp_path / f"{name}{edge_build.OLD_SUFFIX}").mkdir()
    else:  # crashed between the two renames: the old directory holds every write
        (tmp_path / name).rename(tmp_path / f"{name}{edge_build.OLD_SUFFIX}")

    reopened = await open_index(tmp_path)
    try:
        assert await reopened.count() == 50
        assert leftovers(tmp_path) == []
        hits = await reopened.search(vs[7].tolist(), tenant_id="t", k=1)
        assert hits[0].payload["source_ids"] == ["e7"]
    finally:
        await reopened.close()


def test_the_build_command_refuses_a_missing_directory(tmp_path: Path) -> None:
    assert edge_build.main([str(tmp_path / "nope")]) == 2
    assert edge_build.main([]) == 2
