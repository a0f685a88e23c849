"""Embedding: sentence-transformers models offline, a Redis cache, an Ollama fallback, model versions.

Heavy modules (torch, sentence-transformers) load only when their submodule is imported.
"""

from core.embedding.types import EmbedResult, TextEmbedder

__all__ = ["EmbedResult", "TextEmbedder"]
