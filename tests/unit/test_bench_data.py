"""Benchmarks in a clone without the data sets: one line naming the file and where it comes from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import data as bench_data


@pytest.mark.parametrize(
    ("bench", "needs", "source"),
    [
        ("consolidate", "locomo/locomo_dev.json", "snap-research/LoCoMo"),
        ("locomo", "locomo/locomo_dev.json", "snap-research/LoCoMo"),
        ("scifact", "scifact/corpus.jsonl", "allenai/scifact"),
    ],
)
def test_a_benchmark_without_its_data_says_what_it_needs(
    bench: str, needs: str, source: str, tmp_path: Path
) -> None:
    env = {**os.environ, "HYBRIDMEM_BENCH_DATA": str(tmp_path / "nothing-here")}
    done = subprocess.run(
        [sys.executable, "-c", "from deployments.cli import main; raise SystemExit(main())", "bench", bench],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert needs in lines[0] and "--data" in lines[0] and source in lines[0]


def test_data_given_or_found_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "conversations.json"
    mine.write_text("[]")
    assert bench_data.locomo_file(mine) == mine
    (tmp_path / "scifact").mkdir()
    (tmp_path / "scifact" / "corpus.jsonl").write_text("")
    monkeypatch.setenv("HYBRIDMEM_BENCH_DATA", str(tmp_path))
    assert bench_data.scifact_dir() == tmp_path / "scifact"
    with pytest.raises(bench_data.BenchDataMissing, match=r"locomo_dev\.json"):
        bench_data.locomo_file()
