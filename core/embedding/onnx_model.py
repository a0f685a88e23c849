"""ONNX Runtime inference for an exported sentence model: the same tokenizer, pooling and window as torch.

The graph (core.embedding.onnx_export) takes token ids and the attention mask and returns L2-normalised
vectors. Micro-batches run concurrently, one single-threaded session run each: small int8 GEMMs scale
poorly across intra-op threads, while whole batches on separate cores scale almost linearly.
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

from core.embedding.onnx_export import ModelLayout, Variant, ensure_exported, read_layout
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
    ) -> None:
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailable(f"the ONNX backend needs onnxruntime installed: {exc}") from exc
        self.layout: ModelLayout = read_layout(model_dir)
        self.variant = variant
        self.path = ensure_exported(name, model_dir, variant, cache_dir)
        self.max_seq_length = self.layout.max_seq_length
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads steal the core from the other micro-batch (and from neighbours on a shared host).
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
        self.dimension = int(self._session.get_outputs()[0].shape[-1] or self._probe_dimension())
        self.workers = max(1, threads or default_threads())
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hm-onnx")

    def _probe_dimension(self) -> int:
        return int(self._run(["dimension probe"]).shape[1])

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def _run(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        batch = [t.lower() for t in texts] if self.layout.lowercase else list(texts)
        enc = self.tokenizer(
            batch,
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="np",
            return_token_type_ids=False,
        )
        feed = {
            "input_ids": enc["input_ids"].astype(np.int64, copy=False),
            "attention_mask": enc["attention_mask"].astype(np.int64, copy=False),
        }
        out: npt.NDArray[np.float32] = self._session.run(None, feed)[0]
        return out

    def run_groups(self, texts: Sequence[str], groups: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Vectors for ``texts``; each group of indices is one session run, runs spread over the cores.

        With fewer groups than cores the largest groups are halved, so one big batch still uses them all.
        """
        parts = [list(g) for g in groups if g]
        while len(parts) < self.workers:
            largest = max(range(len(parts)), key=lambda i: len(parts[i]), default=None)
            if largest is None or len(parts[largest]) < 2:
                break
            group = parts.pop(largest)
            half = len(group) // 2
            parts += [group[:half], group[half:]]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if len(parts) == 1:
            out[parts[0]] = self._run([texts[i] for i in parts[0]])
            return out
        runs = self._pool.map(lambda idx: (idx, self._run([texts[i] for i in idx])), parts)
        for idx, vectors in runs:
            out[idx] = vectors
        return out

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int = 32,
        **_ignored: Any,
    ) -> npt.NDArray[np.float32]:
        """Normalised vectors in input order (length-sorted batches of ``batch_size``, like ST's encode)."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return self.run_groups(sentences, groups)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
