"""The torch Embedder on a GPU: ``device: auto`` finds it, runs fp16, and agrees with the CPU's vectors.

Skipped where torch sees no GPU (CI). On a GPU machine: ``pytest -m gpu tests/unit/test_embedding_gpu.py``
(``HYBRIDMEM_TEST_MODEL`` names a model directory when the packaged model is not installed there).
The fp16 vectors share the torch model version with the CPU's fp32 ones, which is only sound while
the two agree closely; these tests hold them to it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.embedding.sentence_model import SentenceTransformerEmbedder  # noqa: E402
from core.settings import EmbeddingSettings  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU"),
]

MODEL = os.environ.get("HYBRIDMEM_TEST_MODEL", "all-MiniLM-L6-v2")
TEXTS = [
    "the cat sat on the mat",
    'Caroline said, "I went to the LGBTQ support group yesterday and it was so powerful."',
    "quarterly revenue grew 12% while operating costs fell",
    "",
    "memory " * 600,  # past the 256-token window: truncated, flagged
    "Vitamin D deficiency is associated with increased risk of multiple sclerosis. " * 8,
]


@pytest.fixture(scope="module")
def gpu_model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(model=MODEL, device="auto", backend="auto"))
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def cpu_model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(model=MODEL, device="cpu", backend="torch"))
    yield embedder
    embedder.close()


def test_auto_picks_the_gpu_with_the_torch_backend_in_fp16(gpu_model: SentenceTransformerEmbedder) -> None:
    assert gpu_model.device == "cuda"
    assert gpu_model.version.backend == "torch"
    assert next(gpu_model._model.parameters()).dtype == torch.float16
    assert gpu_model.encode_batch_size == 512  # the GPU default (encode_batch_size unset)
    vectors = gpu_model.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    # fp16 inside, unit length in float32 outside (normalised after the model)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_gpu_vectors_agree_with_the_cpu_and_share_its_version(
    gpu_model: SentenceTransformerEmbedder, cpu_model: SentenceTransformerEmbedder
) -> None:
    assert gpu_model.version.key == cpu_model.version.key
    gpu, cpu = gpu_model.encode(TEXTS), cpu_model.encode(TEXTS)
    cosines = np.sum(gpu * cpu, axis=1) / (np.linalg.norm(gpu, axis=1) * np.linalg.norm(cpu, axis=1))
    assert cosines.min() >= 0.999, cosines


def test_a_texts_vector_does_not_depend_on_its_batch(gpu_model: SentenceTransformerEmbedder) -> None:
    together = gpu_model.encode(TEXTS)
    alone = np.stack([gpu_model.encode([t])[0] for t in TEXTS])
    assert np.sum(together * alone, axis=1).min() >= 0.9995


def test_served_path_flags_truncation_and_matches_encode(gpu_model: SentenceTransformerEmbedder) -> None:
    result = asyncio.run(gpu_model.embed(TEXTS))
    assert result.truncated == [False, False, False, False, True, False]
    np.testing.assert_allclose(np.asarray(result.vectors), gpu_model.encode(TEXTS), atol=2e-3)
