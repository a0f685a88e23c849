"""The benchmark report: targets judged from the result files, the side-by-side table with sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report as bench_report


def test_targets_are_judged_from_results_and_missing_ones_say_not_run() -> None:
    results = {
        "quality_locomo": {"recall@10": 76.0},
        "quality_scifact": {"ndcg@10": 0.73},
        "retrieve_100k": {"ratio_cpu": 2.9, "ratio_qps": 0.5},
    }
    rows = {row[0]: row for row in bench_report.target_rows(results)}
    assert rows["LoCoMo recall@10 (hybrid)"][3] == "yes"
    assert rows["SciFact nDCG@10 (hybrid)"][3] == "no"
    assert rows["/v1/context CPU per request, served / limit, 100k"][3] == "yes"  # <= target
    assert rows["/v1/context req/s at 16 clients, served / limit, 100k"][3] == "no"  # >= target
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


def test_each_result_says_when_and_on_which_commit_it_was_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    changes = {"abc1234": [], "0ld0ld0": ["core/retrieval/bm25_postgres.py", "core/a.py", "core/b.py"]}
    monkeypatch.setattr(bench_report, "product_changes_since", changes.get)
    prov = {"measured_at": "2026-11-25T05:02:11+00:00", "commit": "abc1234", "dirty": False, "cpus": 2,
            "cpu_model": "Test CPU", "mem_gib": 24, "python": "3.11.7",
            "load_average_start": [0.42, 0.5, 0.6], "duration_s": 312.4}  # fmt: skip
    results = {
        "ingest": {"name": "ingest", "episodes_per_s": 9000.0, "provenance": prov},
        "retrieve_10k": {"name": "retrieve", "p95_ms": 900.0, "provenance": {**prov, "commit": "0ld0ld0"}},
        "embed": {"name": "embed", "ratio_single": 0.6},
        "faults": {"name": "faults", "generated_at": "2026-11-24T10:00:00+00:00", "machine": {"cpus": 2}},
    }
    rows = {row[0]: row for row in bench_report.provenance_rows(results, changes.get)}
    assert rows["ingest"] == ("ingest", "2026-11-25 05:02 UTC", "abc1234", "0.42", "312.4")
    assert rows["retrieve_10k"][2] == (
        "0ld0ld0 (product code changed since: core/retrieval/bm25_postgres.py, core/a.py and 1 more)"
    )
    assert rows["embed"][1:3] == ("not recorded", "not recorded")
    assert rows["faults"][1] == "2026-11-24 10:00 UTC"

    text = bench_report.render(results, plots_dir=tmp_path)  # not over the repository's plots
    assert (tmp_path / "retrieve_latency.png").exists()
    assert "## Where each result comes from" in text
    assert "Machines: 2 cores (Test CPU), 24 GiB RAM, Python 3.11.7." in text
    assert "Measured 2026-11-25 05:02 UTC, commit abc1234, load average 0.42 at start, took 312.4 s." in text
    assert "Measured: not recorded (the file predates provenance)." in text
    assert "| provenance |" not in text  # shown as the line above, not dumped into the key/value table


def test_context_level_locomo_is_judged_and_tabled_per_budget(tmp_path: Path) -> None:
    figures = {
        b: {"recall": r, "tokens": float(b) - 2, "redundancy": d, "per_category": {"temporal": {"recall": r}}}
        for b, r, d in (("256", 66.0, 0.0005), ("512", 89.0, 0.001), ("1024", 91.0, 0.03))
    }
    data = {
        "name": "locomo", "recall@10": 79.0, "context": figures,
        "context_without_dedupe": {b: {**f, "redundancy": 0.05} for b, f in figures.items()},
    }  # fmt: skip
    rows = {row[0]: row for row in bench_report.target_rows({"quality_locomo": data})}
    assert rows["LoCoMo context evidence recall, 512 tokens"][2:] == ("89.0", "yes")
    assert rows["LoCoMo context redundancy, 512 tokens"][3] == "yes"
    assert rows["LoCoMo context redundancy, 1024 tokens"][3] == "no"  # 0.03 > 0.02
    text = bench_report.render({"quality_locomo": data}, plots_dir=tmp_path)
    assert "| 512 | 89.0 | 510.0 | 0.001 | 89.0 | 0.05 |" in text
    assert "| temporal | 66.0 | 89.0 | 91.0 |" in text
    assert (tmp_path / "context_recall_by_budget.png").is_file()
