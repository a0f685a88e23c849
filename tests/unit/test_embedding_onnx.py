"""The ONNX Runtime backend: offline export cached once, vectors that agree with torch, own versions.

The export runs once per test session into a temporary cache (``onnx_cache``); tests that damage a
cache work on a copy of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.embedding.backend import cpu_has_int8_dot, resolve_backend
from core.embedding.calibration import CALIBRATION_TEXTS
from core.embedding.onnx_export import (
    AGREEMENT_KEY,
    META_FILE,
    MODEL_FILE,
    Int8QualityTooLow,
    Variant,
    cached_model,
    default_cache_dir,
    ensure_exported,
    export_key,
)
from core.embedding.sentence_model import SentenceTransformerEmbedder, resolve_model_dir
from core.errors import ModelUnavailable
from core.settings import EmbeddingSettings

EXPORT_LOG = "exported ONNX embedding model"
TEXTS = [
    'Caroline said, "I went to a LGBTQ support group yesterday and it was so powerful."',
    'Melanie said, "That sounds amazing! What did you learn there?"',
    "Vitamin D deficiency is associated with an increased risk of cardiovascular disease in adults.",
    "The cat sat on the mat.",
    "quarterly revenue grew 12% while operating costs fell",
    "memory " * 300,  # truncated at the model's window
]


def settings(cache: Path, backend: str = "onnx-int8", **extra: object) -> EmbeddingSettings:
    fields = {"backend": backend, "device": "cpu", "cpu_threads": 2, "model_cache_dir": cache} | extra
    return EmbeddingSettings.model_validate(fields)


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def int8_model(onnx_cache: Path) -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(settings(onnx_cache))
    yield model
    model.close()


@pytest.fixture(scope="session")
def fp32_model(onnx_cache: Path) -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(settings(onnx_cache, "onnx"))
    yield model
    model.close()


@pytest.fixture(scope="session")
def torch_model() -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(EmbeddingSettings(backend="torch", device="cpu", cpu_threads=2))
    yield model
    model.close()


def entry(cache: Path, variant: Variant) -> Path:
    name, model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    return cache / export_key(name, model_dir, variant)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.einsum("ij,ij->i", a, b)
    return out


def test_int8_vectors_agree_with_torch(
    int8_model: SentenceTransformerEmbedder, torch_model: SentenceTransformerEmbedder
) -> None:
    got, want = int8_model.encode(TEXTS), torch_model.encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, want).mean() >= 0.99
    assert cosines(got, want).min() >= 0.97


def test_fp32_vectors_match_torch(
    fp32_model: SentenceTransformerEmbedder, torch_model: SentenceTransformerEmbedder
) -> None:
    got, want = fp32_model.encode(TEXTS), torch_model.encode(TEXTS)
    assert cosines(got, want).min() >= 0.9999


async def test_truncation_and_token_counts_match_torch(
    int8_model: SentenceTransformerEmbedder, torch_model: SentenceTransformerEmbedder
) -> None:
    got, want = await int8_model.embed(TEXTS), await torch_model.embed(TEXTS)
    assert got.truncated == want.truncated == [False] * 5 + [True]
    assert got.token_counts == want.token_counts
    assert int8_model.max_seq_length == torch_model.max_seq_length == 256


def test_each_backend_is_its_own_model_version(
    onnx_cache: Path,
    int8_model: SentenceTransformerEmbedder,
    fp32_model: SentenceTransformerEmbedder,
    torch_model: SentenceTransformerEmbedder,
) -> None:
    again = SentenceTransformerEmbedder(settings(onnx_cache))
    try:
        versions = [torch_model.version, fp32_model.version, int8_model.version]
        assert [v.backend for v in versions] == ["torch", "onnx", "onnx-int8"]
        assert len({v.key for v in versions}) == 3
        assert len({v.collection_suffix for v in versions}) == 3
        assert again.version == int8_model.version  # stable across loads
    finally:
        again.close()


def test_second_load_reuses_the_export(
    onnx_cache: Path, int8_model: SentenceTransformerEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    model_file = entry(onnx_cache, "int8") / MODEL_FILE
    before = model_file.stat()
    with caplog.at_level(logging.INFO, logger="core.embedding.onnx_export"):
        second = SentenceTransformerEmbedder(settings(onnx_cache))
    second.close()
    after = model_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert EXPORT_LOG not in caplog.text
    meta = json.loads((model_file.parent / META_FILE).read_text())
    assert meta["variant"] == "int8" and meta["pooling"] == "mean" and meta["max_seq_length"] == 256


def test_an_int8_export_records_how_well_it_agrees_with_fp32(
    onnx_cache: Path, int8_model: SentenceTransformerEmbedder
) -> None:
    meta = json.loads((entry(onnx_cache, "int8") / META_FILE).read_text())
    agreement = meta[AGREEMENT_KEY]
    assert int8_model.int8_agreement == agreement
    assert agreement["texts"] == len(CALIBRATION_TEXTS) >= 40
    # all-MiniLM-L6-v2 holds int8 (0.9926 measured); a broken quantisation lands far lower (mpnet: 0.90).
    assert 0.99 <= agreement["cosine_mean"] < 1.0
    assert 0.9 < agreement["cosine_min"] <= agreement["cosine_mean"]


def test_an_int8_export_below_the_bar_is_refused_and_auto_serves_fp32(
    onnx_cache: Path, int8_model: SentenceTransformerEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    strict = {"int8_min_cosine": 0.9999}  # above what this model's int8 export reaches
    int8_file = entry(onnx_cache, "int8") / MODEL_FILE
    before = int8_file.stat()
    with pytest.raises(Int8QualityTooLow, match=r"does not hold its quality: mean cosine 0\.99") as refused:
        SentenceTransformerEmbedder(settings(onnx_cache, "onnx-int8", **strict))
    assert "embedding.int8_min_cosine 0.9999" in refused.value.message
    with caplog.at_level(logging.INFO):
        model = SentenceTransformerEmbedder(settings(onnx_cache, "auto", **strict))
    try:
        assert model.version.backend == "onnx"  # fp32 ONNX, not torch
        if cpu_has_int8_dot():
            assert "int8 export refused, using fp32 ONNX" in caplog.text
        after = int8_file.stat()  # the refused entry stays cached: it is judged, not exported again
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    finally:
        model.close()
    # At the default bar the same export serves.
    default = SentenceTransformerEmbedder(settings(onnx_cache, "onnx-int8"))
    default.close()
    assert default.version.backend == "onnx-int8"


def test_an_older_int8_entry_gets_its_agreement_measured_once(
    onnx_cache: Path,
    int8_model: SentenceTransformerEmbedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    source = entry(onnx_cache, "int8")
    shutil.copytree(source, cache / source.name)
    meta_path = cache / source.name / META_FILE
    meta = json.loads(meta_path.read_text())
    recorded = meta.pop(AGREEMENT_KEY)
    meta_path.write_text(json.dumps(meta))  # as exported before the agreement was recorded
    model_file = cache / source.name / MODEL_FILE
    before = model_file.stat()
    name, model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    with caplog.at_level(logging.INFO, logger="core.embedding.onnx_export"):
        assert ensure_exported(name, model_dir, "int8", cache, min_cosine=0.99) == model_file
        ensure_exported(name, model_dir, "int8", cache, min_cosine=0.99)
    assert caplog.text.count("measured int8 agreement") == 1
    assert EXPORT_LOG not in caplog.text
    after = model_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert json.loads(meta_path.read_text())[AGREEMENT_KEY] == recorded
    assert not list(cache.glob(".tmp-*"))
    with pytest.raises(Int8QualityTooLow):
        ensure_exported(name, model_dir, "int8", cache, min_cosine=0.9999)


def test_the_package_directory_is_only_read(int8_model: SentenceTransformerEmbedder) -> None:
    files = {p.relative_to(int8_model.model_dir) for p in int8_model.model_dir.rglob("*")}
    assert not any(str(p).endswith(".onnx") or p.parts[0] == "onnx" for p in files)


def test_missing_cache_dir_is_created(tmp_path: Path) -> None:
    cache = tmp_path / "does" / "not" / "exist"
    model = SentenceTransformerEmbedder(settings(cache, "onnx"))
    model.close()
    assert cached_model(entry(cache, "fp32")) is not None


@pytest.mark.parametrize("damage", ["truncated", "no-metadata", "garbage", "stale-scratch"])
def test_corrupt_or_partial_cache_is_exported_again(
    onnx_cache: Path,
    fp32_model: SentenceTransformerEmbedder,
    torch_model: SentenceTransformerEmbedder,
    tmp_path: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    target = entry(cache, "fp32")
    shutil.copytree(entry(onnx_cache, "fp32"), target)
    model_file = target / MODEL_FILE
    if damage == "truncated":  # a crash mid-copy, or a full disk
        with model_file.open("r+b") as fh:
            fh.truncate(model_file.stat().st_size // 2)
    elif damage == "no-metadata":  # metadata is written last: its absence means unfinished
        (target / META_FILE).unlink()
    elif damage == "garbage":  # same size, other bytes: the checksum catches it
        size = model_file.stat().st_size
        model_file.write_bytes(b"\0" * size)
    else:  # an exporter died: its scratch directory is swept, the real entry is missing
        shutil.move(str(target), str(cache / f".tmp-{target.name}-dead"))
    assert cached_model(target) is None
    with caplog.at_level(logging.INFO, logger="core.embedding.onnx_export"):
        model = SentenceTransformerEmbedder(settings(cache, "onnx"))
    try:
        assert EXPORT_LOG in caplog.text
        assert cached_model(target) == model_file
        assert cosines(model.encode(TEXTS[:2]), torch_model.encode(TEXTS[:2])).min() >= 0.9999
        assert not list(cache.glob(".tmp-*"))
    finally:
        model.close()


def test_two_processes_starting_at_once_export_once(tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
        "from core.embedding.sentence_model import SentenceTransformerEmbedder\n"
        "from core.settings import EmbeddingSettings\n"
        f"m = SentenceTransformerEmbedder(EmbeddingSettings(backend='onnx', device='cpu', cpu_threads=1, "
        f"model_cache_dir={str(cache)!r}))\n"
        "print(m.version.key, m._model.path.stat().st_ino)\n"
        "m.close()\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # same version, same file
    assert sum(err.count(EXPORT_LOG) for _, err in outs) == 1
    assert not list(cache.glob(".tmp-*"))


def test_auto_picks_onnx_on_cpu_and_torch_on_gpu(onnx_cache: Path) -> None:
    on_cpu = "onnx-int8" if cpu_has_int8_dot() else "onnx"
    assert resolve_backend("auto", "cpu") == on_cpu
    assert resolve_backend("auto", "cuda") == resolve_backend("auto", "cuda:1") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    model = SentenceTransformerEmbedder(settings(onnx_cache, "auto"))
    try:
        assert model.version.backend == on_cpu
    finally:
        model.close()


def test_auto_falls_back_to_torch_when_the_export_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unwritable = blocker / "cache"
    with caplog.at_level(logging.WARNING, logger="core.embedding.sentence_model"):
        model = SentenceTransformerEmbedder(settings(unwritable, "auto"))
    model.close()
    assert model.version.backend == "torch"
    assert "ONNX embedding backend unavailable, using torch" in caplog.text
    with pytest.raises(ModelUnavailable, match="model cache"):
        SentenceTransformerEmbedder(settings(unwritable, "onnx-int8"))


def test_without_onnxruntime_auto_is_torch_and_onnx_is_refused(
    onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the package were not installed
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ModelUnavailable, match="needs onnxruntime"):
        SentenceTransformerEmbedder(settings(onnx_cache, "onnx-int8"))


def test_onnx_backends_refuse_a_gpu_device(onnx_cache: Path) -> None:
    with pytest.raises(ModelUnavailable, match="CPU only"):
        SentenceTransformerEmbedder(settings(onnx_cache, "onnx", device="cuda"))


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "hybridmem" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "hybridmem" / "models"


def test_a_vector_does_not_depend_on_batch_mates_or_cores(
    onnx_cache: Path, int8_model: SentenceTransformerEmbedder
) -> None:
    one_core = SentenceTransformerEmbedder(settings(onnx_cache, cpu_threads=1))
    try:
        batched = int8_model.encode(TEXTS)  # two cores, all texts together
        alone = np.vstack([one_core.encode([t]) for t in TEXTS])
        np.testing.assert_array_equal(batched, alone)
    finally:
        one_core.close()
