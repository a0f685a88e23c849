"""Choose the embedding backend: the local sentence-transformers model, else the Ollama fallback."""

from __future__ import annotations

import asyncio
import logging

import httpx

from core.embedding.ollama import OllamaEmbedder
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import TextEmbedder
from core.errors import EmbeddingError, ModelUnavailable
from core.settings import EmbeddingSettings

log = logging.getLogger(__name__)


def _fallback(
    settings: EmbeddingSettings, cause: ModelUnavailable, client: httpx.AsyncClient | None
) -> OllamaEmbedder:
    if not settings.ollama_url:
        raise ModelUnavailable(
            f"{cause.message}; no fallback configured (set HYBRIDMEM_EMBEDDING__OLLAMA_URL to use Ollama)"
        ) from cause
    log.warning(
        "sentence-transformers model %r unavailable (%s); falling back to Ollama model %r at %s",
        settings.model,
        cause.message,
        settings.ollama_model,
        settings.ollama_url,
    )
    return OllamaEmbedder(
        settings.ollama_url,
        settings.ollama_model,
        settings.ollama_timeout_s,
        client or httpx.AsyncClient(timeout=settings.ollama_timeout_s),
        owns_client=client is None,
    )


async def load_embedder(
    settings: EmbeddingSettings, *, client: httpx.AsyncClient | None = None
) -> TextEmbedder:
    """Load the local model off the event loop; on failure fall back to Ollama and check it answers.

    Raises :class:`ModelUnavailable` naming both causes when neither backend works.
    """
    try:
        return await asyncio.to_thread(SentenceTransformerEmbedder, settings)
    except ModelUnavailable as exc:
        fallback = _fallback(settings, exc, client)
        try:
            await fallback.model_version()
        except EmbeddingError as ollama_exc:
            await fallback.aclose()
            raise ModelUnavailable(
                f"{exc.message}; Ollama fallback at {settings.ollama_url} failed too: {ollama_exc.message}"
            ) from ollama_exc
        return fallback
