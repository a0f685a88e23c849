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
    """Ingress → Retriever → Embedder and the consolidation scheduler; the Retriever owns an embedded engine.

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

    app_args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    overrides = app_args.settings
    opts = deployment_options or {}

    def dep(d: Any) -> Any:
        return d.options(**opts[d.name]) if d.name in opts else d

    embedder = dep(Embedder).bind(overrides)
    # With the embedded engine the Retriever owns it and the writers reach it through the Retriever; with
    # a Qdrant server every process talks to the server directly.
    retriever = dep(Retriever).bind(overrides, embedder)
    scheduler = dep(ConsolidationScheduler).bind(overrides, embedder, retriever)
    app: Application = dep(Ingress).bind(overrides, embedder, retriever, scheduler)
    return app
