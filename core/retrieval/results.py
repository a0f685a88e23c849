"""What the read path takes and returns: the lexical searchers' protocols and the result types."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

from core.models import Episode, Frozen, MemoryRecord, ScoredSnippet


class LexicalSearcher(Protocol):
    """Lexical search over durable episodes (the Postgres store provides exactly this)."""

    async def search_text(
        self, *, tenant_id: str, query: str, k: int, filters: dict[str, Any] | None
    ) -> list[tuple[Episode, float]]: ...


class MemoryLexicalSearcher(Protocol):
    """Optional: lexical search over semantic-memory records (used when the lexical searcher has it)."""

    async def search_memories_text(
        self, *, tenant_id: str, query: str, k: int, filters: dict[str, Any] | None
    ) -> list[tuple[MemoryRecord, float]]: ...


class SearchResult(Frozen):
    """Ranked snippets, the tiers that failed, and relevance stats for quality monitoring."""

    snippets: list[ScoredSnippet]
    degraded: list[str] = Field(default_factory=list)
    top_score: float | None = None
    score_spread: float | None = None
    model_version: str | None = Field(None, description="The semantic collection's model version searched")


class ContextResult(Frozen):
    """Packed snippets (each with its token count), the rendered context and the tokens it uses."""

    snippets: list[ScoredSnippet]
    context: str
    tokens_used: int
    token_budget: int
    degraded: list[str] = Field(default_factory=list)
    top_score: float | None = None
    score_spread: float | None = None
    model_version: str | None = None
