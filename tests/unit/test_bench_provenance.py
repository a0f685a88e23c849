"""Benchmark provenance: the commit (and local changes) and the machine state a result was measured on."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

from bench.provenance import RunProvenance, code_version, product_changes_since


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_code_version_names_the_commit_and_notices_local_changes(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert code_version(tmp_path) == (head, False)
    (tmp_path / "untracked.txt").write_text("not part of the code\n")
    assert code_version(tmp_path) == (head, False)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "ingest.json").write_text("{}\n")
    _git(tmp_path, "add", "bench")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "result")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    (tmp_path / "bench" / "results" / "ingest.json").write_text('{"new": 1}\n')
    assert code_version(tmp_path) == (head, False)  # a benchmark's output is not a code change
    (tmp_path / "NOTES.md").write_text("prose\n")
    _git(tmp_path, "add", "NOTES.md")
    assert code_version(tmp_path) == (head, False)  # nor is documentation
    (tmp_path / "a.txt").write_text("two\n")
    assert code_version(tmp_path) == (head, True)


def test_code_version_outside_git_is_unknown_not_an_error(tmp_path: Path) -> None:
    assert code_version(tmp_path) == (None, None)


def test_a_run_records_when_where_and_how_long() -> None:
    record = RunProvenance().record()
    assert datetime.fromisoformat(record["measured_at"]).tzinfo is not None
    assert record["commit"] and isinstance(record["dirty"], bool)
    assert record["cpus"] >= 1 and record["python"].count(".") == 2
    assert len(record["load_average_start"]) == 3
    assert record["duration_s"] >= 0


def test_product_changes_since_a_commit_ignore_benchmarks_tests_and_docs(tmp_path: Path) -> None:
    def commit(path: str, text: str) -> str:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        _git(tmp_path, "add", path)
        _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", path)
        return _git(tmp_path, "rev-parse", "--short", "HEAD")

    _git(tmp_path, "init", "-q")
    measured = commit("core/search.py", "v1\n")
    assert product_changes_since(measured, tmp_path) == []
    commit("bench/x.py", "bench\n")
    commit("docs/notes.md", "prose\n")
    commit("tests/test_x.py", "test\n")
    assert product_changes_since(measured, tmp_path) == []
    commit("core/search.py", "v2\n")
    assert product_changes_since(measured, tmp_path) == ["core/search.py"]
    assert product_changes_since("0000000", tmp_path) is None  # not in this history
