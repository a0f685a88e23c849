"""Retriever deployment: hybrid search and token-budgeted context over the three tiers (core logic)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from core import metrics  # module reference: Serve pickles deployment classes by value
from core.models import ScoredSnippet
from core.resources import open_resources
from core.retrieval.bm25_postgres import PostgresBm25Search
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.tokens import HFTokenCounter, resolve_tokenizer_path
from core.settings import load_settings
from deployments.context import vector_index_for
from deployments.embedder import HandleEmbedder
from deployments.metrics_backend import init_observability
from deployments.remote import call


def _plain(snippets: Sequence[ScoredSnippet]) -> list[dict[str, Any]]:
    """Snippets as plain dicts for the trip to the Ingress: pickling pydantic models is far slower."""
    return [s.model_dump() for s in snippets]


def _filters(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in (body.get("filters") or {}).items() if v is not None}
    for key in ("created_after", "created_before"):
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    return out


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class Retriever:
    """Embeds the query through the Embedder's handle (same model version as the collection)."""

    async def __init__(  # type: ignore[misc]
        self,
        settings: dict[str, Any] | None,
        embedder: DeploymentHandle[Any],
        vector_store: DeploymentHandle[Any] | None = None,
    ) -> None:
        self._settings = load_settings(settings)
        init_observability(self._settings)
        self._stack = contextlib.AsyncExitStack()
        res = await self._stack.enter_async_context(open_resources(self._settings))
        vectors = await self._stack.enter_async_context(vector_index_for(self._settings, vector_store))
        counter = HFTokenCounter.from_file(resolve_tokenizer_path(self._settings.retrieval.tokenizer))
        r = self._settings.retrieval
        lexical: Any = res.episodic  # ts_rank_cd over tsvector
        if r.lexical_backend == "bm25":
            lexical = PostgresBm25Search(
                res.pool,
                k1=r.bm25_k1,
                b=r.bm25_b,
                use_context=r.lexical_neighbour_window > 0,
                neighbour_weight=r.lexical_neighbour_weight,
                timeout_s=self._settings.postgres.command_timeout_s,
                prune_df=r.bm25_prune_df,
                prune_min_docs=r.bm25_prune_min_docs,
                max_scan_rows=r.bm25_max_scan_rows,
            )
        self._core = HybridRetriever(
            working=res.working,
            lexical=lexical,
            vectors=vectors,
            embedder=HandleEmbedder(embedder),
            settings=self._settings.retrieval,
            token_counter=counter,
        )

    async def search(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with metrics.METRICS.retrieval_seconds.timer(endpoint="search"):
            result = await self._core.search(
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
            result = await self._core.context(
                tenant_id=tenant_id,
                query=body["query"],
                token_budget=body.get("token_budget"),
                filters=_filters(body),
                tier_quotas=body.get("tier_quotas"),
                chronological=body.get("chronological", True),
                mode=body.get("mode", "hybrid"),
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

    async def __del__(self) -> None:
        # Serve's documented replica shutdown hook: close the pool and clients this replica opened.
        await self._stack.aclose()


class HandleRetriever:
    """What the Ingress calls: the Retriever deployment's methods with core errors unwrapped."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._h = handle

    async def search(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await call("retriever", self._h.search.remote(tenant_id, body))
        return out

    async def context(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await call("retriever", self._h.context.remote(tenant_id, body))
        return out
