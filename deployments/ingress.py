"""Ingress deployment: the FastAPI app (auth, validation, error mapping) over the service façade."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from core.settings import load_settings
from deployments.context import api_context
from deployments.http.api import create_api
from deployments.metrics_backend import init_observability


@serve.deployment(max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Ingress:
    """Opens its stores in the ASGI lifespan (closed on replica shutdown); peers arrive as handles."""

    def __init__(
        self,
        settings: dict[str, Any] | None,
        embedder: DeploymentHandle[Any],
        retriever: DeploymentHandle[Any],
        scheduler: DeploymentHandle[Any] | None = None,
    ) -> None:
        self._settings = load_settings(settings)
        init_observability(self._settings)
        self._embedder = embedder
        self._retriever = retriever
        self._scheduler = scheduler

    def __serve_build_asgi_app__(self) -> FastAPI:
        from deployments.http.routers import ingress_routers

        settings = self._settings

        def context_factory() -> Any:
            return api_context(
                settings,
                embedder=self._embedder,
                retriever=self._retriever,
                admin=self._scheduler,
            )

        app = create_api(
            context_factory,
            max_body_bytes=settings.limits.max_request_bytes,
            cors_origins=settings.auth.cors_origins,
            behind_serve_proxy=True,
            request_timeout_s=settings.request_timeout_s,
            extra_routers=ingress_routers(settings),
        )
        return app
