"""Where a process's memory grows: tracemalloc snapshots compared with a baseline, logged on an interval.

Off by default (tracemalloc slows allocation-heavy code noticeably). Turn it on for a soak or an
investigation with ``HYBRIDMEM_MEMTRACE_INTERVAL_S=60``: every Ray process of the app then logs, once per
interval, the source lines whose live allocations grew the most since the first snapshot (taken one
interval after start, so start-up allocations are not counted), as ``hybridmem.memtrace`` records::

    {"msg": "memory growth since baseline", "role": "Ingress", "traced_mb": 41.2,
     "growth_kb": 5120.4, "top": [{"where": "core/x.py:12", "kb": 812.3, "blocks": 9120}, ...]}

A line that keeps climbing across records is a leak candidate; one that rises and then holds is a cache
warming up.
"""

from __future__ import annotations

import logging
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("hybridmem.memtrace")

_started: threading.Thread | None = None
_IGNORED = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")


def growth_report(
    baseline: tracemalloc.Snapshot, current: tracemalloc.Snapshot, *, top: int = 15
) -> dict[str, Any]:
    """The ``top`` source lines by allocation growth from ``baseline`` to ``current``."""
    filters = [tracemalloc.Filter(False, name) for name in _IGNORED]
    diffs = current.filter_traces(filters).compare_to(baseline.filter_traces(filters), "lineno")
    growing = [d for d in diffs if d.size_diff > 0][:top]
    return {
        "traced_mb": round(sum(s.size for s in current.statistics("filename")) / 2**20, 1),
        "growth_kb": round(sum(d.size_diff for d in diffs) / 1024, 1),
        "top": [
            {
                "where": f"{d.traceback[0].filename}:{d.traceback[0].lineno}",
                "kb": round(d.size_diff / 1024, 1),
                "blocks": d.count_diff,
            }
            for d in growing
        ],
    }


def start_memtrace(
    interval_s: float,
    *,
    process: str,
    top: int = 15,
    sleep: Callable[[float], bool] | None = None,
) -> bool:
    """Start tracing in this process and a daemon thread that logs growth every ``interval_s`` seconds.

    Idempotent per process; False when it was already running. ``sleep`` (for tests) returns True to stop.
    """
    global _started
    if _started is not None and _started.is_alive():
        return False
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    stop = threading.Event()
    wait = sleep or stop.wait
    tracemalloc.start(1)

    def loop() -> None:
        if wait(interval_s):
            return
        baseline = tracemalloc.take_snapshot()
        while not wait(interval_s):
            report = growth_report(baseline, tracemalloc.take_snapshot(), top=top)
            logger.info("memory growth since baseline", extra={"role": process, **report})

    _started = threading.Thread(target=loop, name="hybridmem-memtrace", daemon=True)
    _started.start()
    logger.info("memory tracing on", extra={"role": process, "interval_s": interval_s})
    return True
