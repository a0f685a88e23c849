"""Where, when and on which code a benchmark result was measured, recorded inside the result.

A results directory collects files from different days, commits and machine states; the report
can only tell the reader which figures belong together if each file says so itself. Every
``hybridmem bench`` result and the fault suite's JSON carry a ``provenance`` object (the run's
:class:`RunProvenance`)::

    {"measured_at": "2026-11-25T05:02:11+00:00", "commit": "18f32f6", "dirty": false,
     "cpus": 2, "cpu_model": "AMD EPYC 7B13", "mem_gib": 24, "python": "3.11.7",
     "load_average_start": [0.4, 0.6, 0.5], "duration_s": 312.4}

``load_average_start`` is there because the machine is shared: a run that started on a busy
machine is slower for reasons that are not the product's.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


_OUTPUTS = tuple(f":(exclude){p}" for p in ("bench/results", "docs", "*.md"))


def code_version(cwd: Path = ROOT) -> tuple[str | None, bool | None]:
    """The short commit of ``cwd`` and whether tracked files other than benchmark outputs and
    documentation differ from it (``None`` outside git)."""
    commit = _git(cwd, "rev-parse", "--short", "HEAD")
    if commit is None:
        return None, None
    # The benchmarks' own outputs and the documentation do not count: a later step of `make bench`
    # runs after earlier ones rewrote them, and prose does not change a measurement.
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no", "--", ".", *_OUTPUTS)
    return commit, (bool(status) if status is not None else None)


PRODUCT_PATHS = ("core", "deployments", "pyproject.toml", "serve_config.yaml")  # what a result measures


def product_changes_since(commit: str, cwd: Path = ROOT) -> list[str] | None:
    """Product files changed between ``commit`` and HEAD (benchmarks, tests and docs do not count);
    ``None`` when git cannot tell (no repository, or the commit is not in its history)."""
    out = _git(cwd, "diff", "--name-only", commit, "HEAD", "--", *PRODUCT_PATHS)
    return None if out is None else [line for line in out.splitlines() if line]


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def mem_gib() -> int | None:
    try:
        return round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        return None


class RunProvenance:
    """Taken as a run starts (commit, machine, load); :meth:`record` adds how long the run took."""

    def __init__(self, cwd: Path = ROOT) -> None:
        commit, dirty = code_version(cwd)
        try:
            load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = None
        self._t0 = time.monotonic()
        self._start: dict[str, Any] = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "dirty": dirty,
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "mem_gib": mem_gib(),
            "python": platform.python_version(),
            "load_average_start": load,
        }

    def record(self) -> dict[str, Any]:
        return {**self._start, "duration_s": round(time.monotonic() - self._t0, 1)}
