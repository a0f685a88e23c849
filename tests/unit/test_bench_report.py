"""The benchmark report: targets judged from the result files, the side-by-side table with sources."""

from __future__ import annotations

from jobs import bench_report


def test_targets_are_judged_from_results_and_missing_ones_say_not_run() -> None:
    results = {
        "quality_locomo": {"recall@10": 76.0},
        "quality_scifact": {"ndcg@10": 0.73},
        "retrieve_100k": {"p95_ms": 49.0},
    }
    rows = {row[0]: row for row in bench_report.target_rows(results)}
    assert rows["LoCoMo recall@10 (hybrid)"][3] == "yes"
    assert rows["SciFact nDCG@10 (hybrid)"][3] == "no"
    assert rows["/v1/context p95 ms, 100k memories, 16 clients"][3] == "yes"  # <= target
    assert rows["ingest episodes/s (durable, batched HTTP)"][2:] == ("not run", "not run")


def test_side_by_side_cites_every_source_it_uses() -> None:
    text = bench_report.render({"ingest": {"episodes_per_s": 9000.0, "name": "ingest"}})
    assert "## Side by side with published figures" in text
    assert "| ingest, durable | 9,000.0 |" in text
    for key in bench_report.SOURCES:
        assert f"[{key}]" in text
    used = {part.split("]")[0] for row in bench_report.SIDE_BY_SIDE for part in row[2].split("[")[1:]}
    assert used <= set(bench_report.SOURCES)
