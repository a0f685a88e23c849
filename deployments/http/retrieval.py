"""The read path's request handling, in process: an HTTP body in, the response body out.

The Retriever deployment runs exactly this behind its handle; a single-process server (the benchmark's
limit, tests) calls it directly. Either way the routes see one interface: ``search`` / ``context``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core import metrics  # module reference: Serve pickles deployment classes by value
from core.models import ScoredSnippet
from core.retrieval.hybrid import HybridRetriever


def _plain(snippets: Sequence[ScoredSnippet]) -> list[dict[str, Any]]:
    """Snippets as plain dicts for the trip to the Ingress: pickling pydantic models is far slower."""
    return [s.model_dump() for s in snippets]


def _filters(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in (body.get("filters") or {}).items() if v is not None}
    for key in ("created_after", "created_before"):
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    return out


class InProcessRetriever:
    """``search`` / ``context`` over a :class:`HybridRetriever`, with the read path's metrics."""

    def __init__(self, core: HybridRetriever) -> None:
        self.core = core

    async def search(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with metrics.METRICS.retrieval_seconds.timer(endpoint="search"):
            result = await self.core.search(
                tenant_id=tenant_id,
                query=body["query"],
                k=body.get("k"),
                filters=_filters(body),
                tiers=body.get("tiers"),
                mode=body.get("mode", "hybrid"),
            )
        metrics.observe_retrieval("search", result.snippets)
        return {
            "hits": _plain(result.snippets),
            "degraded": result.degraded,
            "top_score": result.top_score,
            "score_spread": result.score_spread,
        }

    async def context(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with metrics.METRICS.retrieval_seconds.timer(endpoint="context"):
            result = await self.core.context(
                tenant_id=tenant_id,
                query=body["query"],
                token_budget=body.get("token_budget"),
                filters=_filters(body),
                tier_quotas=body.get("tier_quotas"),
                chronological=body.get("chronological", True),
                tiers=body.get("tiers"),
                mode=body.get("mode", "hybrid"),
                candidates=body.get("candidates"),
            )
        metrics.observe_retrieval(
            "context", result.snippets, tokens_used=result.tokens_used, token_budget=result.token_budget
        )
        return {
            "context": result.context,
            "snippets": _plain(result.snippets),
            "tokens_used": result.tokens_used,
            "token_budget": result.token_budget,
            "degraded": result.degraded,
        }
