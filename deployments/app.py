"""The Serve application builder used by serve_config.yaml (``import_path: deployments.app:build_app``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application


class AppArgs(BaseModel):
    """Typed ``args`` of the app in serve_config.yaml."""

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides deep-merged onto the HYBRIDMEM_* environment in every replica",
    )


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    """Ingress → Retriever → Embedder, the consolidation scheduler and the VectorStore (embedded Qdrant).

    Serve calls this with serve_config.yaml's ``args``; per-deployment options come from that file.
    """
    return compose_app(args)


def compose_app(
    args: dict[str, Any] | AppArgs, *, deployment_options: dict[str, dict[str, Any]] | None = None
) -> Application:
    """:func:`build_app` for Python callers, with per-deployment ``.options(...)`` overrides by name."""
    from deployments.embedder import Embedder
    from deployments.ingress import Ingress
    from deployments.retriever import Retriever
    from deployments.scheduler import ConsolidationScheduler
    from deployments.vector_store import VectorStore

    app_args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    overrides = app_args.settings
    opts = deployment_options or {}

    def dep(d: Any) -> Any:
        return d.options(**opts[d.name]) if d.name in opts else d

    embedder = dep(Embedder).bind(overrides)
    # Always part of the graph so one serve_config.yaml fits both modes; with a Qdrant server every
    # process talks to the server directly and this replica only answers health checks.
    vector_store = dep(VectorStore).bind(overrides)
    retriever = dep(Retriever).bind(overrides, embedder, vector_store)
    scheduler = dep(ConsolidationScheduler).bind(overrides, embedder, vector_store)
    app: Application = dep(Ingress).bind(overrides, embedder, retriever, vector_store, scheduler)
    return app
