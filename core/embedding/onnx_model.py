"""ONNX Runtime inference for an exported sentence model: the same tokenizer, pooling and window as torch.

The graph (core.embedding.onnx_export) takes token ids and the attention mask and returns L2-normalised
vectors. Every text is its own single-threaded session run, the runs spread over the cores:
- int8 quantises activations with one scale per run, so a text batched with others would get a vector
  that depends on its batch-mates (cosine 0.99 between two batchings); alone, it is the same every time;
- a run of one text has no padding, and measured as fast or faster than length-sorted batches of 32
  (turns 320 vs 278 texts/s, abstracts 45 vs 36 on 2 cores);
- small GEMMs scale poorly across intra-op threads; separate runs on separate cores scale almost linearly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.embedding.onnx_export import (
    ModelLayout,
    Variant,
    ensure_exported,
    int8_agreement,
    read_layout,
    run_one,
    token_ids,
)
from core.errors import ModelUnavailable

log = logging.getLogger(__name__)

# ORT's fused SkipLayerNormalization kernel measured slower than plain Add + LayerNormalization on the
# quantised graph here (13% vs 6% of run time), so that one fusion is left out.
_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set (as torch does; Ray sets it to an actor's CPUs), else usable cores."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OnnxSentenceModel:
    """An exported sentence model run by ONNX Runtime on CPU; ``encode`` mirrors sentence-transformers."""

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        variant: Variant,
        cache_dir: Path,
        threads: int | None = None,
        min_cosine: float | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailable(f"the ONNX backend needs onnxruntime installed: {exc}") from exc
        self.layout: ModelLayout = read_layout(model_dir)
        self.variant = variant
        self.path = ensure_exported(name, model_dir, variant, cache_dir, min_cosine=min_cosine)
        # int8 only: mean/min cosine against the fp32 graph on the calibration texts (export.json).
        self.agreement: dict[str, Any] | None = (
            int8_agreement(self.path.parent, model_dir) if variant == "int8" else None
        )
        self.max_seq_length = self.layout.max_seq_length
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads steal the core from the other runs (and from neighbours on a shared host).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session: Any = ort.InferenceSession(
                str(self.path),
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=_DISABLED_OPTIMIZERS,
            )
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelUnavailable(f"cannot load the ONNX model {self.path}: {exc}") from exc
        width = self._session.get_outputs()[0].shape[-1]
        self.dimension = width if isinstance(width, int) and width > 0 else self._probe_dimension()
        self.workers = max(1, threads or default_threads())
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hm-onnx")

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return token_ids(self.tokenizer, texts, self.layout)

    def _run_one(self, ids: list[int]) -> npt.NDArray[np.float32]:
        return run_one(self._session, ids)

    def _probe_dimension(self) -> int:
        return int(self._run_one(self._tokenize(["dimension probe"])[0]).shape[0])

    def run(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Normalised vectors for ``texts`` in order; one run per text, runs spread over the cores."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        ids = self._tokenize(texts)
        if self.workers == 1 or len(texts) == 1:
            for i, row in enumerate(ids):
                out[i] = self._run_one(row)
            return out
        # Longest first, so no core is left with one long text at the end.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for i, vector in zip(order, self._pool.map(lambda i: self._run_one(ids[i]), order), strict=True):
            out[i] = vector
        return out

    def encode(self, sentences: Sequence[str], **_ignored: Any) -> npt.NDArray[np.float32]:
        """sentence-transformers' ``encode`` shape: normalised vectors in input order."""
        return self.run(sentences)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
