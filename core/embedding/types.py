"""The embedding contract: what every embedder returns and the Protocol it implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.models import ModelVersion


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Vectors (L2-normalised float32 values) in input order, per-text truncation flags, the model version."""

    vectors: list[list[float]]
    truncated: list[bool]
    version: ModelVersion
    cache_hits: int = 0
    token_counts: list[int] = field(default_factory=list)


@runtime_checkable
class TextEmbedder(Protocol):
    """Turns texts into vectors of one model version (local model, cache, Serve handle, Ollama)."""

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        """Embed ``texts`` in order; never an error for long inputs (they are truncated and flagged)."""
        ...

    async def model_version(self) -> ModelVersion:
        """The version every vector from this embedder belongs to."""
        ...


def merge_results(parts: Sequence[EmbedResult], version: ModelVersion) -> EmbedResult:
    """Results of consecutive slices of one request as one result, in order."""
    return EmbedResult(
        vectors=[v for p in parts for v in p.vectors],
        truncated=[t for p in parts for t in p.truncated],
        version=version,
        cache_hits=sum(p.cache_hits for p in parts),
        token_counts=[c for p in parts for c in p.token_counts],
    )
