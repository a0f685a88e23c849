"""The routers the Ingress serves beside the core API (episodes, state): one list for the Ingress and the
tests that build its app."""

from __future__ import annotations

from fastapi import APIRouter

from core.settings import Settings
from deployments.http.deps import get_embedder, require
from deployments.http.embeddings import build_embeddings_router, build_models_router
from deployments.http.routes_admin import router as admin_router
from deployments.http.routes_search import router as search_router


def ingress_routers(settings: Settings) -> tuple[APIRouter, ...]:
    """Search and context, admin, the OpenAI-compatible embeddings and models routes (read scope)."""
    return (
        search_router,
        admin_router,
        build_embeddings_router(
            get_embedder,
            require("memory:read"),
            max_texts=settings.limits.max_batch_items,
            max_text_chars=settings.limits.max_content_chars,
        ),
        build_models_router(get_embedder, require("memory:read")),
    )
