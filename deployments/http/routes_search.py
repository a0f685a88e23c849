"""Search and context assembly under /v1: the agent-facing read path, served by the Retriever.

Each route converts its request model into the core query type once (``to_query``); the query crosses
the Retriever's handle as it is, and the result it returns is serialised once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from hybridmem_client.models import tz_aware
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.models import ScoredSnippet, Tier
from core.retrieval.query import ContextQuery, Filters, SearchQuery
from deployments.http.deps import Ctx, Reader

router = APIRouter(prefix="/v1", tags=["retrieval"])

MetaValue = str | int | float | bool
MetaKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
    session_id: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
    kind: str | list[str] | None = Field(None, description="One kind or any of several")
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[MetaKey, MetaValue] | None = Field(
        None, max_length=16, description="Equality on metadata keys ([A-Za-z0-9_-], up to 64 chars)"
    )

    def to_filters(self) -> Filters:
        return Filters.of(
            agent_id=self.agent_id,
            session_id=self.session_id,
            kind=self.kind,
            created_after=self.created_after,
            created_before=self.created_before,
            metadata=self.metadata,
        )


class _ReadRequest(BaseModel):
    """What a search and a context request share: the query, its mode, filters and tiers."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4096)
    mode: Literal["hybrid", "vector", "lexical"] = "hybrid"
    filters: SearchFilters = Field(default_factory=SearchFilters)
    tiers: list[Tier] | None = Field(None, description="Tiers to search (default: all)")
    as_of: datetime | None = Field(
        None,
        description="Answer with what was current at this time: what existed then and was not yet "
        "superseded or expired (default: now)",
    )
    include_superseded: bool = Field(
        False,
        description="Also find superseded, expired and not-yet-valid items, each with its superseded_by, "
        "superseded_at, valid_from and valid_to",
    )

    @field_validator("as_of")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return tz_aware("as_of", v)

    def _shared(self, tenant_id: str) -> dict[str, Any]:
        filters = self.filters.to_filters()
        return {
            "tenant_id": tenant_id,
            "text": self.query,
            "mode": self.mode,
            "filters": replace(filters, as_of=self.as_of, include_superseded=self.include_superseded),
            "tiers": None if self.tiers is None else tuple(t.value for t in self.tiers),
        }


class SearchRequest(_ReadRequest):
    k: int | None = Field(None, ge=1, le=200, description="Hits to return (default: retrieval.default_k, 10)")
    diversify: bool = Field(
        True,
        description="False: hits in fused relevance order, near-duplicate texts kept and no MMR (for "
        "key-value callers, whose distinct items may hold equal texts)",
    )

    def to_query(self, tenant_id: str) -> SearchQuery:
        return SearchQuery(k=self.k, diversify=self.diversify, **self._shared(tenant_id))


class SearchResponse(BaseModel):
    hits: list[ScoredSnippet]
    degraded: list[str] = Field(description="Tiers that could not be searched (results come from the rest)")
    top_score: float | None = None
    score_spread: float | None = None
    model_version: str | None = Field(
        None, description="Model version of the semantic collection searched (None when it was not)"
    )


class ContextRequest(_ReadRequest):
    token_budget: int | None = Field(
        None,
        ge=1,
        le=32_768,
        description="Tokens the context may use (default: retrieval.default_token_budget)",
    )
    tier_quotas: dict[Tier, int] | None = Field(None, description="Max tokens per tier")
    chronological: bool = Field(True, description="Order packed snippets by time")
    candidates: int | None = Field(
        None,
        ge=1,
        le=200,
        description="Ranked candidates considered for packing, and fetched from each tier (default: "
        "retrieval.context_candidates, 50)",
    )
    dedupe: bool = Field(
        True,
        description="Leave out what the context holds already: repeated sentences, and a summary beside "
        "the turns it was built from when it adds none of the query's words (false: pack as ranked)",
    )

    def to_query(self, tenant_id: str) -> ContextQuery:
        return ContextQuery(
            token_budget=self.token_budget,
            tier_quotas=tuple((t.value, n) for t, n in (self.tier_quotas or {}).items()),
            chronological=self.chronological,
            candidates=self.candidates,
            dedupe=self.dedupe,
            **self._shared(tenant_id),
        )


class ContextResponse(BaseModel):
    context: str
    snippets: list[ScoredSnippet]
    tokens_used: int
    token_budget: int
    degraded: list[str]
    model_version: str | None = Field(
        None, description="Model version of the semantic collection searched (None when it was not)"
    )


@router.post("/search", response_model=SearchResponse, summary="Hybrid search over all three tiers")
async def search(body: SearchRequest, ctx: Ctx, who: Reader) -> Response:
    result = await ctx.reader().search(body.to_query(who.tenant_id))
    return _json(
        SearchResponse.model_construct(
            hits=result.snippets,
            degraded=result.degraded,
            top_score=result.top_score,
            score_spread=result.score_spread,
            model_version=result.model_version,
        )
    )


@router.post("/context", response_model=ContextResponse, summary="Best context that fits a token budget")
async def context(body: ContextRequest, ctx: Ctx, who: Reader) -> Response:
    result = await ctx.reader().context(body.to_query(who.tenant_id))
    return _json(
        ContextResponse.model_construct(
            context=result.context,
            snippets=result.snippets,
            tokens_used=result.tokens_used,
            token_budget=result.token_budget,
            degraded=result.degraded,
            model_version=result.model_version,
        )
    )


def _json(model: BaseModel) -> Response:
    """The response serialised once, by pydantic's Rust core (its parts are the core's validated results).

    Returning a Response skips FastAPI's second validation and its JSON encoding of the model; the
    routes keep ``response_model`` for the OpenAPI schema.
    """
    return Response(model.model_dump_json(), media_type="application/json")
