"""Fallback model host: an Ollama server's ``/api/embed`` (used when the local model cannot load)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from core.embedding.types import EmbedResult
from core.embedding.version import ollama_model_version
from core.errors import EmbeddingError, ModelUnavailable
from core.metrics import METRICS
from core.models import ModelVersion

log = logging.getLogger(__name__)

_PROBE_TEXT = "hybridmem dimension probe"


class OllamaEmbedder:
    """Embeds through Ollama; its model version is ``ollama/<model>@<digest>`` so it gets its own collection.

    Borrows ``client``; call :meth:`aclose` only when this embedder was given ownership (``owns_client``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float,
        client: httpx.AsyncClient,
        *,
        owns_client: bool = False,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._model = model
        self._timeout = httpx.Timeout(timeout_s)
        self._client = client
        self._owns_client = owns_client
        self._version: ModelVersion | None = None
        self._lock = asyncio.Lock()
        self.model_calls = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._base}{path}"
        try:
            resp = await self._client.post(url, json=body, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"ollama at {self._base} unreachable: {exc!r}") from exc
        if resp.status_code >= 400:
            raise EmbeddingError(f"ollama {path} answered {resp.status_code}: {resp.text[:200]}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise EmbeddingError(f"ollama {path} answered non-JSON") from exc
        if not isinstance(data, dict):
            raise EmbeddingError(f"ollama {path} answered {type(data).__name__}, expected an object")
        return data

    async def _embed_raw(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        backend = "ollama"
        METRICS.embedding_batch_size.observe(len(texts), backend=backend)
        try:
            with METRICS.embedding_seconds.timer(backend=backend):
                data = await self._post(
                    "/api/embed", {"model": self._model, "input": texts, "truncate": True}
                )
        except EmbeddingError:
            METRICS.embedding_errors_total.inc(backend=backend)
            raise
        rows = data.get("embeddings")
        if not isinstance(rows, list) or len(rows) != len(texts):
            raise EmbeddingError(
                f"ollama returned {len(rows) if isinstance(rows, list) else 0} vectors for {len(texts)} texts"
            )
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except ValueError as exc:
            raise EmbeddingError("ollama returned ragged or non-numeric embeddings") from exc
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise EmbeddingError(f"ollama returned embeddings of shape {arr.shape}")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = (arr / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        self.model_calls += 1
        METRICS.embedding_texts_total.inc(len(texts), backend=backend)
        return arr

    async def _digest(self) -> str | None:
        """The model digest when ``/api/show`` reports one (top level or under ``details``)."""
        try:
            show = await self._post("/api/show", {"model": self._model})
        except EmbeddingError as exc:
            log.info("ollama /api/show gave no digest for %s: %s", self._model, exc)
            return None
        details = show.get("details")
        for source in (show, details if isinstance(details, dict) else {}):
            digest = source.get("digest")
            if isinstance(digest, str) and digest:
                return digest
        return None

    async def _ensure_version(self, dimension: int | None) -> ModelVersion:
        async with self._lock:
            if self._version is None:
                if dimension is None:
                    dimension = int((await self._embed_raw([_PROBE_TEXT])).shape[1])
                digest = await self._digest()
                self._version = ollama_model_version(self._model, digest=digest, dimension=dimension)
                log.info("ollama embedding model ready", extra={"model": self._version.key})
            return self._version

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        if not texts:
            return EmbedResult(vectors=[], truncated=[], version=await self.model_version())
        arr = await self._embed_raw(list(texts))
        version = await self._ensure_version(int(arr.shape[1]))
        if arr.shape[1] != version.dimension:
            raise EmbeddingError(f"ollama model {self._model} changed dimension: {arr.shape[1]}")
        return EmbedResult(vectors=arr.tolist(), truncated=[False] * len(texts), version=version)

    async def model_version(self) -> ModelVersion:
        return self._version or await self._ensure_version(None)

    async def info(self) -> dict[str, Any]:
        """What ``GET /v1/embeddings/model`` reports; Ollama does not expose its window."""
        version = await self.model_version()
        return {**version.model_dump(), "key": version.key, "max_seq_length": None, "device": self._base}

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
