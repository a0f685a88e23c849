"""Model versions: a name plus a revision derived from the weights, so vectors of two models never mix.

The revision is the first 12 hex digits of a SHA-256 over the weight files the backend loads. It is
computed once per process (the package directory may be read-only, so nothing is written next to it).
The ONNX backends export their graph from the torch weights (core.embedding.onnx_export), so their
revision hashes those weights plus the backend and the export format: every machine that exports the
same weights the same way agrees on the version, and fp32, int8 and torch vectors never share one.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from core.models import ModelVersion

_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "torch": ("model.safetensors", "pytorch_model.bin"),
    "openvino": ("openvino/openvino_model.bin", "openvino_model.bin"),
}
# Bump when the exported graph changes (pooling, opset, quantisation recipe): a new version, new vectors.
ONNX_EXPORT_FORMAT = 1
EXPORTED_BACKENDS = frozenset({"onnx", "onnx-int8"})
_CHUNK = 1 << 20
_revisions: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """SHA-256 of one file, memoised on (path, size, mtime) so a reload does not re-read the weights."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if memo_key in _revisions:
            return _revisions[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    hexdigest = digest.hexdigest()
    with _lock:
        _revisions[memo_key] = hexdigest
    return hexdigest


def weights_revision(model_dir: Path, backend: str = "torch") -> str:
    """12-hex revision of the weights ``backend`` loads from ``model_dir``; the backend is folded in."""
    candidates = _WEIGHT_FILES.get(backend, _WEIGHT_FILES["torch"])
    found = [model_dir / name for name in candidates if (model_dir / name).is_file()]
    if not found:
        found = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    digest = hashlib.sha256()
    if backend in EXPORTED_BACKENDS:
        digest.update(f"{backend}/export-{ONNX_EXPORT_FORMAT}".encode())
    elif backend != "torch":
        digest.update(backend.encode())
    for path in found:
        digest.update(_file_sha256(path).encode())
    if not found:
        # No weights on disk that we recognise: fall back to the config so the revision is still stable.
        for name in ("config.json", "modules.json"):
            if (model_dir / name).is_file():
                digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def sentence_model_version(name: str, model_dir: Path, *, dimension: int, backend: str) -> ModelVersion:
    """Version of a sentence-transformers model loaded from ``model_dir``."""
    return ModelVersion(
        name=name, revision=weights_revision(model_dir, backend), dimension=dimension, backend=backend
    )


def ollama_model_version(model: str, *, digest: str | None, dimension: int) -> ModelVersion:
    """Version of an Ollama-hosted model: its digest when Ollama reports one, else a hash of the name."""
    source = digest.split(":", 1)[-1] if digest else hashlib.sha256(model.encode()).hexdigest()
    return ModelVersion(name=f"ollama/{model}", revision=source[:12], dimension=dimension, backend="ollama")
