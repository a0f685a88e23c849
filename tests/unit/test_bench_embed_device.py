"""The GPU embedding benchmark: refuses to run without a GPU, and reports what its docstring promises.

The GPU itself is exercised on a GPU machine (`make bench-gpu`); here the benchmark's own logic runs
with torch's CUDA checks pointed at the CPU, so a broken key or a wrong cosine fails in CI.
"""

from __future__ import annotations

import json

import pytest

import core.embedding.sentence_model as sentence_model
import jobs.bench_embed_device as bench

torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_2_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--json"])
    assert exc.value.code == 2
    assert "torch sees no accelerator" in capsys.readouterr().err


def test_reports_rates_agreement_and_provenance(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "stand-in (CPU)")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    real_choose = sentence_model.choose_device
    monkeypatch.setattr(sentence_model, "choose_device", lambda s: "cpu" if s == "auto" else real_choose(s))
    monkeypatch.setattr(bench, "BATCH_SIZES", (16,))
    out = tmp_path / "embed_device.json"
    assert bench.main(["--turns", "48", "--abstracts", "8", "--rounds", "1", "--cpu-sample", "16",
                       "--json", "--out", str(out)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["turns"] == 48 and set(printed["turns_per_s"]) == {"16"}
    assert printed["turns_per_s_best"] > 0 and printed["speedup_vs_cpu"] > 0
    # Same weights, same device here: the "GPU" and CPU vectors are the same vectors.
    assert printed["cosine_vs_cpu_min"] >= 0.99999 and printed["cpu_version_matches"] is True
    assert printed["gpu_norm_max_error"] < 1e-5 and printed["embed_matches_encode"] is True
    assert printed["provenance"]["commit"] and printed["provenance"]["duration_s"] >= 0
