"""Where the benchmarks' data sets are, and one line saying where to get one that is missing.

The data sets are not in the repository (their licences are research-only): a benchmark takes its
data with ``--data``, or finds it under ``HYBRIDMEM_BENCH_DATA``, or under ``../shared/bench`` beside the
checkout when that is there. Missing data ends the command with :class:`BenchDataMissing`, one line
naming the file it needs and where the data comes from, instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"

LOCOMO_SOURCE = (
    "LoCoMo: snap-research/LoCoMo on GitHub, data/locomo10.json (CC BY-NC 4.0); the dev file holds its "
    "conversations conv-26, conv-30, conv-41, conv-42 and conv-43"
)
SCIFACT_SOURCE = (
    "SciFact in BEIR layout (corpus.jsonl, queries.jsonl, qrels/train.tsv): BEIR's scifact.zip, from "
    "allenai/scifact (CC BY-NC 2.0)"
)


class BenchDataMissing(SystemExit):
    """A benchmark's data set is not where it was looked for (the command exits with status 1 and the
    message)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"hybridmem bench: {message}")
        self.message = message


def root() -> Path:
    """The bench data directory: ``HYBRIDMEM_BENCH_DATA``, else ``../shared/bench``."""
    configured = os.environ.get("HYBRIDMEM_BENCH_DATA")
    return Path(configured) if configured else SHARED


def locomo_file(data: str | os.PathLike[str] | None = None) -> Path:
    """The LoCoMo conversations JSON: ``data``, else ``<bench data>/locomo/locomo_dev.json``."""
    return _existing(Path(data) if data else root() / "locomo" / "locomo_dev.json", LOCOMO_SOURCE)


def scifact_dir(data: str | os.PathLike[str] | None = None) -> Path:
    """The SciFact BEIR directory: ``data``, else ``<bench data>/scifact``; it must hold corpus.jsonl."""
    path = Path(data) if data else root() / "scifact"
    _existing(path / "corpus.jsonl", SCIFACT_SOURCE)
    return path


def required(path: Path, source: str) -> Path:
    """``path`` if it is a file; else :class:`BenchDataMissing` naming it and ``source``."""
    return _existing(path, source)


def _existing(path: Path, source: str) -> Path:
    if not path.is_file():
        shown = os.path.relpath(path) if path.is_absolute() else str(path)
        raise BenchDataMissing(f"needs {shown}, which is not there; pass --data PATH ({source})")
    return path
