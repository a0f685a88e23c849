"""The GPU embedding benchmark: refuses CPU figures under a GPU name, and reports what it promises.

The GPU itself is exercised on a GPU machine (`make bench-gpu`); here the benchmark's own logic runs
with torch's CUDA checks pointed at the CPU, so a missing key or a wrong agreement figure fails in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bench.embed_device as bench
import core.embedding.sentence_model as sentence_model

torch = pytest.importorskip("torch")

KEYS = {
    "bench", "device_name", "torch", "data", "turns", "abstracts", "rounds", "turns_per_s",
    "abstracts_per_s", "device", "model_version", "dtype", "embed_matches_encode", "turns_per_s_best",
    "cpu_threads", "cpu_turns_per_s", "cpu_version_matches", "cpu_sample_turns", "cpu_sample_abstracts",
    "gpu_norm_max_error", "cosine_vs_cpu_mean", "cosine_vs_cpu_min", "speedup_vs_cpu", "provenance",
}  # fmt: skip


@pytest.fixture
def threads_restored() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cuda_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch "sees" a GPU whose work runs on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "stand-in (CPU)")
    real_choose = sentence_model.choose_device
    monkeypatch.setattr(sentence_model, "choose_device", lambda s: "cpu" if s == "auto" else real_choose(s))


def test_agreement_is_the_row_cosine_whatever_the_lengths() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    mean, low = bench.agreement(a, b)
    assert low == pytest.approx(0.0)  # orthogonal rows
    assert mean == pytest.approx((1.0 + 2**-0.5 + 0.0) / 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_2_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--json"]) == 2
    assert "torch sees no accelerator" in capsys.readouterr().err


def test_a_model_that_lands_on_the_cpu_is_refused(
    cuda_on_cpu: None, threads_restored: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--turns", "8", "--abstracts", "0", "--rounds", "1", "--cpu-sample", "4"])
    assert exc.value.code == 2
    assert "chose 'cpu', not a GPU" in capsys.readouterr().err


def test_reports_every_key_with_rates_and_agreement(
    cuda_on_cpu: None,
    threads_restored: object,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bench, "_on_gpu", lambda embedder: True)
    monkeypatch.setattr(bench, "BATCH_SIZES", (16,))
    out = tmp_path / "embed_device.json"
    argv = [
        "--turns",
        "48",
        "--abstracts",
        "8",
        "--rounds",
        "1",
        "--cpu-sample",
        "16",
        "--json",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    with_abstracts = printed["abstracts"] > 0  # the SciFact file may be absent
    assert set(printed) == KEYS | ({"abstracts_per_s_best"} if with_abstracts else set())
    assert printed["turns"] == 48 and set(printed["turns_per_s"]) == {"16"}
    assert (
        printed["turns_per_s_best"] > 0 and printed["cpu_turns_per_s"] > 0 and printed["speedup_vs_cpu"] > 0
    )
    assert printed["cpu_sample_turns"] == 16 and printed["cpu_sample_abstracts"] == (
        8 if with_abstracts else 0
    )
    # Same weights in fp32 on both sides here: the stand-in "GPU" vectors equal the CPU's.
    assert printed["cosine_vs_cpu_min"] >= 0.99999 and printed["cpu_version_matches"] is True
    assert printed["gpu_norm_max_error"] < 1e-5 and printed["embed_matches_encode"] is True
    assert printed["provenance"]["commit"] and printed["provenance"]["duration_s"] >= 0
