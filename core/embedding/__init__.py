"""Embedding: sentence-transformers models offline (torch or ONNX Runtime), a Redis cache, an Ollama
fallback, model versions.

Heavy modules (torch, sentence-transformers, onnxruntime) load only when their submodule is imported.
"""

from core.embedding.types import EmbedResult, TextEmbedder

__all__ = ["EmbedResult", "TextEmbedder"]
