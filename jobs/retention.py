"""Retention job: archive old consolidated episodes and drop idle Redis session buffers.

    python -m jobs.retention [--older-than-days N] [--keep-vectors] [--idle-days N] [--dry-run]

Defaults come from settings (``consolidation.retention_days``, ``consolidation.idle_session_days``);
with no retention age configured or given, only idle buffers are handled. ``--dry-run`` prints what
would be archived and dropped and changes nothing. Prints a JSON summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from core.consolidation.maintenance import archive_episodes, drop_idle_buffers
from core.ports import VectorIndex
from core.resources import open_resources
from core.settings import Settings, load_settings
from core.stores.vector_factory import open_vector_index
from jobs.consolidate import say


async def run_retention(
    settings: Settings,
    *,
    older_than_days: int | None,
    idle_days: float | None,
    keep_vectors: bool = False,
    dry_run: bool = False,
    vectors: VectorIndex | None = None,
) -> dict[str, Any]:
    """One retention pass in this process; returns what was (or would be) archived and dropped."""
    out: dict[str, Any] = {"dry_run": dry_run}
    async with contextlib.AsyncExitStack() as stack:
        res = await stack.enter_async_context(open_resources(settings))
        if older_than_days is not None:
            if vectors is None and not (keep_vectors or dry_run):
                vectors = await stack.enter_async_context(open_vector_index(settings))
            version = None
            if vectors is not None and not keep_vectors:
                from core.embedding.loader import load_embedder

                version = await (await load_embedder(settings.embedding)).model_version()
            cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
            report = await archive_episodes(
                res.pool, vectors, older_than=cutoff, version=version, keep_vectors=keep_vectors,
                dry_run=dry_run,
            )  # fmt: skip
            out["archive"] = {**asdict(report), "older_than": cutoff.isoformat()}
        if idle_days is not None:
            idle = await drop_idle_buffers(
                res.redis, res.working, res.episodic, prefix=settings.redis.key_prefix,
                idle_s=idle_days * 86400, dry_run=dry_run, max_len=settings.redis.session_buffer_max_len,
            )  # fmt: skip
            out["idle_buffers"] = {"sessions": idle.sessions, "drained": idle.drained, "keys": idle.keys[:50]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.retention", description=__doc__.split("\n")[0])
    parser.add_argument("--older-than-days", type=int, help="archive episodes older than this")
    parser.add_argument("--keep-vectors", action="store_true", help="keep archived episodes' vectors")
    parser.add_argument("--idle-days", type=float, help="drop session buffers idle this long")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen; change nothing")
    args = parser.parse_args(argv)
    settings = load_settings()
    days = args.older_than_days or settings.consolidation.retention_days
    idle = args.idle_days or settings.consolidation.idle_session_days
    result = asyncio.run(
        run_retention(
            settings,
            older_than_days=days,
            idle_days=idle,
            keep_vectors=args.keep_vectors,
            dry_run=args.dry_run,
        )
    )
    if args.dry_run:
        archive = result.get("archive", {})
        say(f"would archive {archive.get('episodes', 0)} episodes of {archive.get('tenants', 0)} tenants")
        say(f"would drop {result['idle_buffers']['sessions']} idle session buffers")
    say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
