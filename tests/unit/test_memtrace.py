"""Memory tracing names the source line whose allocations keep growing."""

from __future__ import annotations

import logging
import threading
import tracemalloc

import pytest

from deployments import memtrace

_HOARD: list[bytes] = []


def _grow(n: int) -> None:
    for _ in range(n):
        _HOARD.append(bytes(4096))  # the line the report must name


def test_growth_report_names_the_growing_line() -> None:
    tracemalloc.start(1)
    try:
        baseline = tracemalloc.take_snapshot()
        _grow(500)
        report = memtrace.growth_report(baseline, tracemalloc.take_snapshot(), top=5)
    finally:
        tracemalloc.stop()
        _HOARD.clear()
    assert report["growth_kb"] >= 500 * 4
    first = report["top"][0]
    assert first["where"].endswith("test_memtrace.py:18") and first["blocks"] >= 500


def test_the_tracer_thread_logs_growth_each_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hybridmem.memtrace")
    ticks = threading.Semaphore(0)
    calls = {"n": 0}

    def sleep(_seconds: float) -> bool:  # baseline, two reports, then stop
        calls["n"] += 1
        if calls["n"] == 2:
            _grow(200)
        ticks.release()
        return calls["n"] > 3

    try:
        assert memtrace.start_memtrace(60, process="test", sleep=sleep)
        assert memtrace._started is not None
        memtrace._started.join(timeout=30)
    finally:
        tracemalloc.stop()
        _HOARD.clear()
    reports = [r for r in caplog.records if r.getMessage() == "memory growth since baseline"]
    assert len(reports) == 2 and all(r.role == "test" for r in reports)  # type: ignore[attr-defined]
    assert any(t["where"].endswith("test_memtrace.py:18") for t in reports[0].top)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        memtrace.start_memtrace(0, process="test")
