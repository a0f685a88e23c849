"""Response shapes of the API that have no wire model in :mod:`hybridmem_client.models` (pages, results).

Lenient on purpose (unknown fields are ignored) so an older client keeps working against a newer server.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from hybridmem_client.models import Episode, ScoredSnippet, ScratchpadEntry, Transcript

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Page(_Out, Generic[T]):
    """One page of a keyset-paginated list; pass ``next_cursor`` back for the next page."""

    items: list[T]
    next_cursor: str | None = None


class EpisodeBatchResult(_Out):
    ids: list[uuid.UUID]
    inserted: int
    duplicates: int


class TranscriptResult(_Out):
    transcript: Transcript
    created: bool


class SessionContext(_Out):
    session_id: str
    episodes: list[Episode]
    source: Literal["redis", "postgres"]
    degraded: list[str] = Field(default_factory=list)


class SearchResult(_Out):
    hits: list[ScoredSnippet]
    degraded: list[str] = Field(default_factory=list)
    top_score: float | None = None
    score_spread: float | None = None
    model_version: str | None = None


class ContextResult(_Out):
    context: str
    snippets: list[ScoredSnippet]
    tokens_used: int
    token_budget: int
    degraded: list[str] = Field(default_factory=list)
    model_version: str | None = None


class EmbeddingResult(_Out):
    """``POST /v1/embeddings/batch``: vectors in input order, with truncation flags and the model."""

    vectors: list[list[float]]
    truncated: list[bool]
    model_version: dict[str, Any]
    cache_hits: int = 0
    token_counts: list[int] = Field(default_factory=list)


class ConsolidationRun(_Out):
    """A consolidation run's record; ``counts`` per partition (as text) → {status, episodes, ...}."""

    id: uuid.UUID
    status: str
    partitions: list[int] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    counts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    trigger: str | None = None

    @property
    def done(self) -> bool:
        return self.status not in ("running", "starting", "queued", "pending")

    def total(self, key: str) -> int:
        return sum(int(c.get(key, 0)) for c in self.counts.values())


class ReadyReport(_Out):
    """``GET /readyz``: ``ok`` is False (status "degraded") when a store is unreachable; the app still
    serves (HTTP 200) unless no store answers (503)."""

    status: str
    stores: dict[str, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Identity(_Out):
    """``GET /v1/whoami``: the tenant and scopes the API key carries."""

    tenant_id: str
    scopes: list[str]
    key_name: str | None = None


__all__ = [
    "ConsolidationRun",
    "ContextResult",
    "EmbeddingResult",
    "EpisodeBatchResult",
    "Identity",
    "Page",
    "ReadyReport",
    "ScratchpadEntry",
    "SearchResult",
    "SessionContext",
    "TranscriptResult",
]
