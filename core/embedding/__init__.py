"""Embedding: sentence-transformers models offline, a Redis cache, an Ollama fallback, model versions."""

from core.embedding.types import EmbedResult, TextEmbedder

__all__ = ["EmbedResult", "TextEmbedder"]
