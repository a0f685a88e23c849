"""The Serve application builder used by serve_config.yaml (``import_path: deployments.app:build_app``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application

from core.settings import load_settings


class AppArgs(BaseModel):
    """Typed ``args`` of the app in serve_config.yaml."""

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides deep-merged onto the HYBRIDMEM_* environment in every replica",
    )


def build_app(
    args: dict[str, Any] | AppArgs, *, deployment_options: dict[str, dict[str, Any]] | None = None
) -> Application:
    """Ingress → Retriever → Embedder, the consolidation scheduler, and the VectorStore owner (embedded Qdrant).

    ``deployment_options`` (Python callers only) overrides a deployment's options by name; with
    ``serve run``/``serve deploy`` the per-deployment section of serve_config.yaml does this.
    """
    from deployments.embedder import Embedder
    from deployments.ingress import Ingress
    from deployments.retriever import Retriever
    from deployments.scheduler import ConsolidationScheduler
    from deployments.vector_store import VectorStore

    app_args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    overrides = app_args.settings
    settings = load_settings(overrides)
    opts = deployment_options or {}

    def dep(d: Any) -> Any:
        return d.options(**opts[d.name]) if d.name in opts else d

    embedder = dep(Embedder).bind(overrides)
    vector_store = dep(VectorStore).bind(overrides) if settings.qdrant_backend != "server" else None
    retriever = dep(Retriever).bind(overrides, embedder, vector_store)
    scheduler = dep(ConsolidationScheduler).bind(overrides, embedder, vector_store)
    return dep(Ingress).bind(overrides, embedder, retriever, vector_store, scheduler)
