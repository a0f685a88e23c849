"""HNSW builds for Qdrant Edge shards in a child process, and the directory swap that installs them.

qdrant-edge-py holds the GIL for the whole of ``EdgeShard.optimize()`` (about 13 s for 30k 384-d points on
2 cores), which would freeze every search of the owning process. So the owner copies a flushed shard to
``<name>.build``, a child process (this module's ``main``, niced) loads that copy, builds its indexes and
exits, and the owner installs the result (see :class:`core.stores.edge_index.EdgeVectorIndex`):

1. replay into the built copy the writes made since the copy was taken, then flush and close it;
2. close the live shard, rename ``<name>`` to ``<name>.old`` and ``<name>.build`` to ``<name>``;
3. open ``<name>``, delete ``<name>.old``.

A crash between the two renames leaves ``<name>.old`` without ``<name>``: :func:`recover_dirs` renames it
back (it holds every write; the built copy may not). A leftover ``<name>.build`` is always discarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from core.errors import StoreUnavailable
from core.models import JsonDict
from core.stores.qdrant_index import STORE

logger = logging.getLogger(__name__)

BUILD_SUFFIX = ".build"
OLD_SUFFIX = ".old"
# Lower CPU priority for the build so that serving processes on the same cores come first.
BUILD_NICENESS = 10
# The child's command line, without the directory argument.
BUILD_COMMAND: tuple[str, ...] = (sys.executable, "-m", "core.stores.edge_build")


def build_dir(root: Path, name: str) -> Path:
    return root / f"{name}{BUILD_SUFFIX}"


def old_dir(root: Path, name: str) -> Path:
    return root / f"{name}{OLD_SUFFIX}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: JsonDict) -> None:
    """Write, fsync, then ``os.replace``: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def recover_dirs(root: Path, name: str) -> None:
    """Undo what a crash during a build or swap left behind, before ``<name>`` is opened."""
    live, old, build = root / name, old_dir(root, name), build_dir(root, name)
    if not live.exists() and old.exists():
        logger.warning("edge collection %s: restoring %s left by an interrupted index swap", name, old.name)
        os.replace(old, live)
        fsync_dir(root)
    for stale in (old, build):
        if stale.exists():
            logger.info("edge collection %s: removing leftover %s", name, stale.name)
            shutil.rmtree(stale, ignore_errors=True)


def copy_for_build(root: Path, name: str) -> Path:
    """Copy the (flushed, not being written) shard ``<name>`` to a fresh ``<name>.build``."""
    target = build_dir(root, name)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / name, target)
    return target


def swap_in_build(root: Path, name: str) -> None:
    """Make ``<name>.build`` the live directory (the live shard must be closed); drop the old one."""
    live, old = root / name, old_dir(root, name)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(live, old)
    os.replace(build_dir(root, name), live)
    fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)


class SwapGate:
    """Searches share the shards; a swap waits for the searches in flight and holds new ones back.

    A readers-writer lock for threads that prefers the swapper, which holds it for well under a second.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


def log_build_failure(task: asyncio.Task[dict[str, float]]) -> None:
    """Done-callback of a background build: log its failure (the live shard is unchanged)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("background edge index build failed", exc_info=task.exception())


async def run_build(directory: Path) -> dict[str, float]:
    """Build the shard at ``directory`` in a child process; its stats, or StoreUnavailable if it failed.

    Cancelling kills the child (the half-built copy is the caller's to delete).
    """
    proc = await asyncio.create_subprocess_exec(
        *BUILD_COMMAND,
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-2000:]
        raise StoreUnavailable(STORE, f"edge index build exited with {proc.returncode}: {tail}")
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        stats: dict[str, float] = json.loads(lines[-1])
    except (IndexError, ValueError):
        stats = {}
    return stats


def build(directory: Path) -> dict[str, float]:
    """Load the shard copy at ``directory``, build its HNSW and payload indexes, flush and close it."""
    import qdrant_edge as edge  # only the child needs the engine

    started = time.perf_counter()
    shard = edge.EdgeShard.load(str(directory))
    try:
        changed = shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "points": float(info.points_count),
        "indexed": float(info.indexed_vectors_count),
        "changed": float(bool(changed)),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m core.stores.edge_build SHARD_DIR\n")
        return 2
    directory = Path(args[0])
    if not directory.is_dir():
        sys.stderr.write(f"error: {directory} is not a shard directory\n")
        return 2
    with suppress(OSError):
        os.nice(BUILD_NICENESS)
    sys.stdout.write(json.dumps(build(directory)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
