"""The local sentence-transformers embedder: normalised vectors, truncation flagged, stable versions.

The behaviour tests run against both backends (torch and ONNX int8): a text's vector must not depend
on the texts it was batched with (the ONNX backend runs each text alone for that reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import EmbedResult, TextEmbedder
from core.errors import ModelUnavailable
from core.settings import EmbeddingSettings


@pytest.fixture(scope="module", params=["torch", "onnx-int8"])
def model(request: pytest.FixtureRequest) -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1, backend=request.param))
    yield embedder
    embedder.close()


async def test_vectors_are_normalised_float32_of_the_model_dimension(
    model: SentenceTransformerEmbedder,
) -> None:
    result = await model.embed(["the cat sat on the mat", "quarterly revenue grew 12%", ""])
    assert isinstance(model, TextEmbedder)
    assert isinstance(result, EmbedResult)
    arr = np.asarray(result.vectors)
    assert arr.shape == (3, 384) == (3, result.version.dimension)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(arr.astype(np.float32), arr)  # values are exactly float32
    assert result.truncated == [False, False, False]


async def test_long_input_is_truncated_flagged_and_counted_never_an_error(
    model: SentenceTransformerEmbedder,
) -> None:
    before = model.stats()["truncated_total"]
    long_text = "memory " * 2000
    result = await model.embed(["short text", long_text])
    assert result.truncated == [False, True]
    assert result.token_counts[1] == model.max_seq_length == 256
    assert model.stats()["truncated_total"] == before + 1
    # Truncation keeps the head: the embedding equals that of the text cut at the model's window
    # (254 one-token words + [CLS] + [SEP] = 256), and differs from a shorter cut.
    head, shorter = model.encode(["memory " * 254, "memory " * 100])
    np.testing.assert_allclose(result.vectors[1], head, atol=1e-5)
    assert not np.allclose(result.vectors[1], shorter, atol=1e-5)


async def test_embed_matches_encode_and_empty_input(model: SentenceTransformerEmbedder) -> None:
    texts = ["alpha", "beta gamma"]
    result = await model.embed(texts)
    np.testing.assert_allclose(np.asarray(result.vectors), model.encode(texts), atol=1e-6)
    empty = await model.embed([])
    assert empty.vectors == [] and empty.truncated == []
    assert model.encode([]).shape == (0, 384)


async def test_inference_runs_off_the_event_loop(model: SentenceTransformerEmbedder) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await model.embed(["tick " * 100] * 16)
    finally:
        task.cancel()
    assert ticks > 0, "the event loop was blocked while the model ran"


def test_version_is_stable_across_loads() -> None:
    first = SentenceTransformerEmbedder(EmbeddingSettings(backend="torch"))
    second = SentenceTransformerEmbedder(EmbeddingSettings(backend="torch", model=str(first.model_dir)))
    try:
        assert first.version.revision == second.version.revision
        assert first.version.dimension == second.version.dimension == 384
        assert first.version.backend == "torch"
        assert len(first.version.revision) == 12
        assert first.version.key == f"all-MiniLM-L6-v2@{first.version.revision}"
    finally:
        first.close()
        second.close()


def test_unknown_model_raises_model_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelUnavailable, match="not-a-model"):
        SentenceTransformerEmbedder(EmbeddingSettings(model="hybridmem-tests/not-a-model"))
    empty_dir = tmp_path / "empty-model"
    empty_dir.mkdir()
    with pytest.raises(ModelUnavailable):
        SentenceTransformerEmbedder(EmbeddingSettings(model=str(empty_dir)))


async def test_mixed_lengths_run_in_length_sorted_micro_batches(model: SentenceTransformerEmbedder) -> None:
    texts = ["hi", "word " * 120, "ok then", "memory " * 30, "x", "word " * 118, "y z", "memory " * 31]
    groups = model.micro_batches(model.token_lengths(texts))
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    assert all(len(g) <= model.encode_batch_size for g in groups)
    lengths = model.token_lengths(texts)
    for g in groups:  # a group never pads a short text up to a long one
        assert max(lengths[i] for i in g) <= 1.25 * min(lengths[i] for i in g) + 4
    result = await model.embed(texts)
    one_by_one = np.vstack([model._model.encode([t], normalize_embeddings=True) for t in texts])
    np.testing.assert_allclose(result.vectors, one_by_one, atol=1e-5)


def test_encode_batch_size_defaults_per_device_and_an_explicit_one_wins() -> None:
    default = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1, backend="torch", device="cpu"))
    explicit = SentenceTransformerEmbedder(
        EmbeddingSettings(cpu_threads=1, backend="torch", device="cpu", encode_batch_size=3)
    )
    try:
        assert default.encode_batch_size == 32
        assert explicit.encode_batch_size == 3
        groups = explicit.micro_batches([8] * 10)  # equal lengths: only the size limit splits them
        assert [len(g) for g in groups] == [3, 3, 3, 1]
    finally:
        default.close()
        explicit.close()
