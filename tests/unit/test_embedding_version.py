"""Model versions come from the weights: same bytes → same revision; other bytes or backend → another."""

from __future__ import annotations

from pathlib import Path

from core.embedding.cache import content_hash, pack_vector, unpack_vector
from core.embedding.version import ollama_model_version, sentence_model_version, weights_revision


def _model_dir(root: Path, weights: bytes) -> Path:
    root.mkdir()
    (root / "model.safetensors").write_bytes(weights)
    (root / "config.json").write_text("{}")
    return root


def test_revision_follows_the_weight_bytes(tmp_path: Path) -> None:
    a = _model_dir(tmp_path / "a", b"weights-1")
    a_copy = _model_dir(tmp_path / "a_copy", b"weights-1")
    b = _model_dir(tmp_path / "b", b"weights-2")
    assert weights_revision(a) == weights_revision(a_copy)
    assert weights_revision(a) != weights_revision(b)
    assert len(weights_revision(a)) == 12


def test_backend_changes_the_version(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", b"weights")
    torch_v = sentence_model_version("m", d, dimension=8, backend="torch")
    onnx_v = sentence_model_version("m", d, dimension=8, backend="onnx")
    ollama_v = ollama_model_version("m", digest=None, dimension=8)
    assert len({torch_v.key, onnx_v.key, ollama_v.key}) == 3
    assert len({torch_v.collection_suffix, onnx_v.collection_suffix, ollama_v.collection_suffix}) == 3


def test_ollama_version_uses_the_digest_when_known() -> None:
    with_digest = ollama_model_version("nomic-embed-text", digest="sha256:0a1b2c3d4e5f6789", dimension=768)
    assert with_digest.key == "ollama/nomic-embed-text@0a1b2c3d4e5f"
    assert with_digest.backend == "ollama"
    by_name = ollama_model_version("nomic-embed-text", digest=None, dimension=768)
    assert by_name.revision == ollama_model_version("nomic-embed-text", digest=None, dimension=768).revision
    assert by_name.revision != ollama_model_version("mxbai-embed-large", digest=None, dimension=768).revision


def test_packed_values_round_trip_exactly() -> None:
    vec = [0.1, -0.25, 1 / 3]
    packed = pack_vector(vec, truncated=True, token_count=256)
    assert len(packed) == 3 * 4 + 5
    unpacked = unpack_vector(packed, 3)
    assert unpacked is not None
    values, truncated, count = unpacked
    assert values == [float(x) for x in __import__("numpy").asarray(vec, dtype="float32")]
    assert truncated is True and count == 256
    assert unpack_vector(packed, 4) is None  # another dimension's layout is a miss, not garbage
    assert content_hash("a") != content_hash("b") and len(content_hash("a")) == 64
