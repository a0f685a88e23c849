"""Offline ONNX export of a sentence-transformers model (fp32, or int8 by dynamic quantisation), cached.

The export reads only the model's own directory (which may be read-only) and writes one directory per
(weights, variant, export format) under the cache directory. It runs once: a file lock makes concurrent
starts wait for the first exporter, and the finished directory appears by an atomic rename, so nobody
ever loads a half-written model. A cached model whose checksum no longer matches is exported again.

An int8 export records how well its vectors agree with the fp32 graph it was quantised from, over fixed
calibration texts (core.embedding.calibration), and is refused below ``min_cosine``: dynamic int8 holds
all-MiniLM-L6-v2 (mean cosine 0.993) but not every model (all-mpnet-base-v2: 0.898).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from core.embedding.version import ONNX_EXPORT_FORMAT, weights_revision
from core.errors import ModelUnavailable

log = logging.getLogger(__name__)

Variant = Literal["fp32", "int8"]
MODEL_FILE = "model.onnx"
META_FILE = "export.json"
OPSET = 17
LOCK_TIMEOUT_S = 600.0
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
AGREEMENT_KEY = "agreement"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hybridmem/models``, else ``~/.cache/hybridmem/models`` (read when called)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybridmem" / "models"


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """What the export needs from a sentence-transformers directory: window, pooling, casing."""

    max_seq_length: int
    pooling: Literal["mean", "cls"]
    lowercase: bool


def read_layout(model_dir: Path) -> ModelLayout:
    """Parse ``modules.json`` and its module configs; refuse pipelines the export does not reproduce."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        if kinds[:1] != ["Transformer"] or any(k not in _SUPPORTED_MODULES for k in kinds):
            raise ModelUnavailable(f"ONNX export supports Transformer→Pooling→Normalize, not {kinds}")
        pooling_dirs = [m["path"] for m in modules if str(m["type"]).endswith("Pooling")]
        pooling_cfg = json.loads((model_dir / pooling_dirs[0] / "config.json").read_text())
        st_cfg_path = model_dir / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.is_file() else {}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelUnavailable(f"cannot read the sentence-transformers layout of {model_dir}: {exc}") from exc
    modes = {k for k, v in pooling_cfg.items() if k.startswith("pooling_mode_") and v}
    if modes == {"pooling_mode_mean_tokens"}:
        pooling: Literal["mean", "cls"] = "mean"
    elif modes == {"pooling_mode_cls_token"}:
        pooling = "cls"
    else:
        raise ModelUnavailable(f"ONNX export supports mean or CLS pooling, not {sorted(modes)}")
    return ModelLayout(
        max_seq_length=int(st_cfg.get("max_seq_length") or 512),
        pooling=pooling,
        lowercase=bool(st_cfg.get("do_lower_case", False)),
    )


def export_key(name: str, model_dir: Path, variant: Variant) -> str:
    """Cache directory name: model name, torch-weights revision, variant and export format."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-{weights_revision(model_dir, 'torch')}-{variant}-e{ONNX_EXPORT_FORMAT}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cached_model(target: Path) -> Path | None:
    """The model file of a complete, intact cache entry, else ``None`` (missing, partial or corrupt)."""
    model, meta_path = target / MODEL_FILE, target / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") == ONNX_EXPORT_FORMAT and meta.get("sha256") == _sha256(model):
            return model
    except (OSError, ValueError, AttributeError):
        pass
    return None


@contextlib.contextmanager
def _locked(lock_path: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive advisory lock on ``lock_path`` (one exporter per cache entry across processes)."""
    with lock_path.open("a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise ModelUnavailable(
                        f"timed out after {timeout_s:.0f}s waiting for another process exporting {lock_path}"
                    ) from exc
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_exported(
    name: str,
    model_dir: Path,
    variant: Variant,
    cache_dir: Path,
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    min_cosine: float | None = None,
) -> Path:
    """Path of the cached ONNX model for ``variant``; exports it first when missing or corrupt.

    Raises :class:`ModelUnavailable` when the cache is not writable or the export fails, and
    :class:`Int8QualityTooLow` when an int8 export agrees with its fp32 graph less than ``min_cosine``.
    """
    found = _ensure_file(name, model_dir, variant, cache_dir, lock_timeout_s)
    if variant == "int8":
        agreement = int8_agreement(found.parent, model_dir, lock_timeout_s=lock_timeout_s)
        if min_cosine is not None and agreement["cosine_mean"] < min_cosine:
            raise Int8QualityTooLow(name, agreement, min_cosine)
    return found


class Int8QualityTooLow(ModelUnavailable):
    """The int8 export's vectors stray too far from the fp32 graph's to stand in for them."""

    def __init__(self, name: str, agreement: dict[str, Any], min_cosine: float) -> None:
        self.agreement = agreement
        super().__init__(
            f"int8 quantisation of {name} does not hold its quality: mean cosine"
            f" {agreement['cosine_mean']:.4f} (min {agreement['cosine_min']:.4f}) against its fp32 graph over"
            f" {agreement['texts']} calibration texts, below embedding.int8_min_cosine {min_cosine};"
            " use embedding.backend 'onnx' (fp32) or 'auto'"
        )


def _ensure_file(
    name: str, model_dir: Path, variant: Variant, cache_dir: Path, lock_timeout_s: float
) -> Path:
    layout = read_layout(model_dir)
    target = cache_dir / export_key(name, model_dir, variant)
    if (found := cached_model(target)) is not None:
        return found
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot create the model cache {cache_dir} ({exc}); set HYBRIDMEM_EMBEDDING__MODEL_CACHE_DIR"
        ) from exc
    try:
        with _locked(cache_dir / f".{target.name}.lock", lock_timeout_s):
            if (found := cached_model(target)) is not None:  # another process finished while we waited
                return found
            return _export_locked(model_dir, layout, variant, target)
    except OSError as exc:
        raise ModelUnavailable(f"cannot write the ONNX export to {cache_dir}: {exc}") from exc


def _export_locked(model_dir: Path, layout: ModelLayout, variant: Variant, target: Path) -> Path:
    """Build the entry in a scratch directory beside ``target``, then rename it into place."""
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by an exporter that died
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by several users' workers
    started = time.perf_counter()
    try:
        fp32 = scratch / "fp32.onnx"
        _export_fp32(model_dir, layout, fp32)
        model = scratch / MODEL_FILE
        agreement: dict[str, Any] | None = None
        if variant == "int8":
            _quantize_int8(fp32, model)
            agreement = measure_agreement(fp32, model, model_dir, layout)
            fp32.unlink()
        else:
            fp32.rename(model)
        meta: dict[str, Any] = {
            "format": ONNX_EXPORT_FORMAT,
            "variant": variant,
            "source": str(model_dir),
            "source_revision": weights_revision(model_dir, "torch"),
            "sha256": _sha256(model),
            "max_seq_length": layout.max_seq_length,
            "pooling": layout.pooling,
            "lowercase": layout.lowercase,
            "versions": _library_versions(),
        }
        if agreement is not None:
            meta[AGREEMENT_KEY] = agreement
        (scratch / META_FILE).write_text(json.dumps(meta, indent=2))
        for path in (model, scratch / META_FILE):
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():  # a corrupt entry: move it aside first (rename cannot replace a full dir)
            trash = target.parent / f".tmp-{target.name}-old-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        scratch.rename(target)
    except ModelUnavailable:
        raise
    except Exception as exc:  # torch/onnx raise many types; all mean "no ONNX model"
        raise ModelUnavailable(f"ONNX export of {model_dir} ({variant}) failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "exported ONNX embedding model",
        extra={"path": str(target), "variant": variant, "seconds": round(time.perf_counter() - started, 2)},
    )
    return target / MODEL_FILE


def token_ids(tokenizer: Any, texts: Sequence[str], layout: ModelLayout) -> list[list[int]]:
    """Each text's ids as the exported graph takes them: no padding, cut at the model's window."""
    batch = [t.lower() for t in texts] if layout.lowercase else list(texts)
    enc = tokenizer(
        batch, padding=False, truncation="longest_first", max_length=layout.max_seq_length,
        return_attention_mask=False, return_token_type_ids=False,
    )  # fmt: skip
    ids: list[list[int]] = enc["input_ids"]
    return ids


def run_one(session: Any, ids: list[int]) -> npt.NDArray[np.float32]:
    """One text through an exported graph (a run of one has no padding: the mask is all ones)."""
    input_ids = np.asarray([ids], dtype=np.int64)
    feed = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
    out: npt.NDArray[np.float32] = session.run(None, feed)[0][0]
    return out


def measure_agreement(fp32: Path, int8: Path, model_dir: Path, layout: ModelLayout) -> dict[str, Any]:
    """Cosine between the two graphs' vectors over the calibration texts (one text per run, as served)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from core.embedding.calibration import CALIBRATION_TEXTS

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    ids = token_ids(tokenizer, CALIBRATION_TEXTS, layout)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    vectors = []
    for path in (fp32, int8):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        vectors.append(np.asarray([run_one(session, row) for row in ids], dtype=np.float64))
    a, b = vectors
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "texts": len(ids),
        "cosine_mean": round(float(cosines.mean()), 6),
        "cosine_min": round(float(cosines.min()), 6),
    }


def int8_agreement(entry: Path, model_dir: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> dict[str, Any]:
    """The agreement an int8 cache entry recorded; an entry exported before it was recorded gets it now
    (one fp32 export into a scratch directory, once, under the entry's lock)."""
    meta_path = entry / META_FILE
    meta = json.loads(meta_path.read_text())
    if AGREEMENT_KEY in meta:
        return dict(meta[AGREEMENT_KEY])
    with _locked(entry.parent / f".{entry.name}.lock", lock_timeout_s):
        meta = json.loads(meta_path.read_text())
        if AGREEMENT_KEY in meta:
            return dict(meta[AGREEMENT_KEY])
        layout = read_layout(model_dir)
        scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-agreement-", dir=entry.parent))
        try:
            fp32 = scratch / "fp32.onnx"
            _export_fp32(model_dir, layout, fp32)
            meta[AGREEMENT_KEY] = measure_agreement(fp32, entry / MODEL_FILE, model_dir, layout)
            fresh = scratch / META_FILE
            fresh.write_text(json.dumps(meta, indent=2))
            with fresh.open("rb") as fh:
                os.fsync(fh.fileno())
            fresh.replace(meta_path)
        except Exception as exc:  # torch/onnx raise many types; all mean "cannot judge this export"
            raise ModelUnavailable(f"cannot record the int8 agreement of {entry}: {exc}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    log.info("measured int8 agreement of a cached export", extra={"path": str(entry), **meta[AGREEMENT_KEY]})
    return dict(meta[AGREEMENT_KEY])


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("torch", "transformers", "onnxruntime", "onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _export_fp32(model_dir: Path, layout: ModelLayout, path: Path) -> None:
    """Trace transformer + pooling + L2 normalisation into one graph: ids and mask in, unit vectors out."""
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax; the SDPA path branches on the mask at trace time.
    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    encoder.eval()

    class _Sentence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if layout.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # A sample with padding, so the traced graph keeps the masking path.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).to(torch.long)
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "sentence_embedding": {0: "batch"},
    }
    kwargs: dict[str, Any] = {
        "input_names": ["input_ids", "attention_mask"],
        "output_names": ["sentence_embedding"],
        "dynamic_axes": axes,
        "opset_version": OPSET,
        "do_constant_folding": True,
        # The TorchScript exporter: no onnxscript dependency, and the graph it emits quantises cleanly.
        "dynamo": False,
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the result is checked by tests
        torch.onnx.export(_Sentence(), (ids, mask), str(path), **kwargs)


def _not_from_onnxruntime(record: logging.LogRecord) -> bool:
    return "onnxruntime" not in record.pathname


def _quantize_int8(source: Path, dest: Path) -> None:
    """Dynamic int8: per-channel int8 weights, activations quantised per batch (u8s8 → VNNI).

    Per-tensor weights measured a mean cosine of 0.95 against torch; per-channel 0.992.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a line per tensor straight to the root logger; a root-logger filter drops
    # only records logged there directly, so our own (named) loggers are untouched.
    root = logging.getLogger()
    root.addFilter(_not_from_onnxruntime)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(_not_from_onnxruntime)
