"""Search and context assembly under /v1: the agent-facing read path, served by the Retriever."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.models import ScoredSnippet, Tier
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


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4096)
    k: int = Field(10, ge=1, le=200)
    mode: Literal["hybrid", "vector", "lexical"] = "hybrid"
    filters: SearchFilters = Field(default_factory=SearchFilters)
    tiers: list[Tier] | None = Field(None, description="Tiers to search (default: all)")


class SearchResponse(BaseModel):
    hits: list[ScoredSnippet]
    degraded: list[str] = Field(description="Tiers that could not be searched (results come from the rest)")
    top_score: float | None = None
    score_spread: float | None = None
    model_version: str | None = None


class ContextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4096)
    token_budget: int = Field(1024, ge=1, le=32_768)
    filters: SearchFilters = Field(default_factory=SearchFilters)
    tier_quotas: dict[Tier, int] | None = Field(None, description="Max tokens per tier")
    chronological: bool = Field(True, description="Order packed snippets by time")
    candidates: int = Field(
        50, ge=1, le=200, description="Ranked candidates considered for packing (and fetched from each tier)"
    )
    mode: Literal["hybrid", "vector", "lexical"] = "hybrid"


class ContextResponse(BaseModel):
    context: str
    snippets: list[ScoredSnippet]
    tokens_used: int
    token_budget: int
    degraded: list[str]


@router.post("/search", response_model=SearchResponse, summary="Hybrid search over all three tiers")
async def search(body: SearchRequest, ctx: Ctx, who: Reader) -> Response:
    result = await ctx.retriever.search(who.tenant_id, body.model_dump(mode="json"))
    return _json(SearchResponse.model_validate(result))


@router.post("/context", response_model=ContextResponse, summary="Best context that fits a token budget")
async def context(body: ContextRequest, ctx: Ctx, who: Reader) -> Response:
    result = await ctx.retriever.context(who.tenant_id, body.model_dump(mode="json"))
    return _json(ContextResponse.model_validate(result))


def _json(model: BaseModel) -> Response:
    """The validated model serialised once, by pydantic's Rust core.

    Returning a Response skips FastAPI's second validation and its JSON encoding of the model; the
    routes keep ``response_model`` for the OpenAPI schema.
    """
    return Response(model.model_dump_json(), media_type="application/json")
