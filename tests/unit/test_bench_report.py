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


def test_soak_report_shows_the_rate_and_the_last_ten_minutes_slope() -> None:
    samples = [[float(t), 100.0 + (t / 60 if t < 1800 else 30.0)] for t in range(0, 3601, 60)]
    soak = {
        "name": "soak", "duration_s": 3603.9, "rate_target": 10.0, "rate_achieved": 9.9,
        "consolidate_every_s": 60.0, "requests": 10, "errors": 0, "latency": {},
        "memory_mb": {"before": {"Ingress": 100.0}, "after": {"Ingress": 130.0},
                      "slope_second_half_by_role": {"Ingress": 0.0}, "samples_by_role": {"Ingress": samples}},
    }  # fmt: skip
    text = bench_report.render({"soak_60min": soak})
    assert "hybridmem bench soak --duration 3600 --rate 10 --consolidate-every 60 --json" in text
    assert "| Ingress | 100 | 130 | 0 | 0 |" in text.replace(".0 ", " ")
    assert bench_report._tail_slope([[0.0, 1.0], [60.0, 2.0]], 600.0) == "n/a"  # too short a run
    assert bench_report._tail_slope([[float(t), t / 60] for t in range(0, 1300, 60)], 600.0) == 1.0


def test_read_only_soak_report_names_its_mix_and_data() -> None:
    soak = {
        "name": "soak", "duration_s": 600.4, "rate_target": 35.0, "rate_achieved": 34.8,
        "consolidate_every_s": 0, "mix_name": "reads", "memories": 2000, "requests": 10, "errors": 0,
        "latency": {}, "memory_mb": {"before": {}, "after": {}},
    }  # fmt: skip
    text = bench_report.render({"soak_reads": soak})
    assert (
        "hybridmem bench soak --mix reads --memories 2000 --duration 600 --rate 35 --consolidate-every 0"
        in text
    )
