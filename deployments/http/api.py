"""The FastAPI application served by the Ingress deployment (also runnable under plain uvicorn)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import __version__
from core.errors import Unauthenticated
from core.logs import request_scope
from core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from core.metrics import observe_http, render_latest
from deployments.http import routes_episodes, routes_state
from deployments.http.deps import ApiContext, Ctx, Reader
from deployments.http.errors import error_response, install_error_handlers
from deployments.http.openapi_doc import document
from deployments.http.timeouts import RequestTimeoutMiddleware

log = logging.getLogger(__name__)

ContextFactory = Callable[[], AbstractAsyncContextManager[ApiContext]]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestIdMiddleware:
    """Propagates (or mints) X-Request-ID, refuses bodies over the configured size, measures each request.

    Pure ASGI: Starlette's ``BaseHTTPMiddleware`` runs every request through an extra task and memory
    streams, which cost more CPU than a small request itself.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, echo_request_id: bool = True) -> None:
        self._app = app
        self._max = max_body_bytes
        self._echo = echo_request_id  # Serve's proxy already echoes X-Request-ID

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        """A request refused before its body is read: a declared length over the limit (413), or a
        body-carrying /v1 request without a valid API key (401: nobody unauthenticated gets their body
        read and parsed). The route's own dependency still checks the key's scopes."""
        path = scope["path"]
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self._max:
            message = f"request body exceeds {self._max} bytes"
            return error_response(path, 413, "limit_exceeded", message, field="body")
        if scope["method"] not in _BODY_METHODS or not path.startswith("/v1/"):
            return None
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if ctx is None:
            return None
        raw = headers.get("x-api-key")
        authorization = headers.get("authorization")
        if raw is None and authorization and authorization.lower().startswith("bearer "):
            raw = authorization[7:].strip()
        try:
            ctx.auth.authenticate(raw)
        except Unauthenticated as exc:
            return error_response(path, 401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that refuses a body once it grows past the limit while streaming (a chunked body
        declares no length): the app answers 413 instead of reading on."""
        limit, received = self._max, 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, f"request body exceeds {limit} bytes")
            return message

        return limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        if len(rid) > 128 or not rid.isprintable():
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if self._echo:
                refusal.headers["X-Request-ID"] = rid
            await refusal(scope, receive, send)
            return
        receive = self._limited(receive)
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Response-Time-ms"] = f"{(time.perf_counter() - start) * 1000:.1f}"
                if self._echo:
                    out["X-Request-ID"] = rid
            await send(message)

        try:
            with request_scope(rid):
                await self._app(scope, receive, send_with_headers)
        except Exception:
            # Unhandled: Starlette's outer error middleware answers 500. A cancelled request (the
            # client went away) is not an error of ours and is not counted.
            observe_http(scope, scope["method"], status, time.perf_counter() - start)
            raise
        observe_http(scope, scope["method"], status, time.perf_counter() - start)


def create_api(
    context_factory: ContextFactory,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    extra_routers: tuple[Any, ...] = (),
    cors_origins: list[str] | None = None,
    behind_serve_proxy: bool = False,
    request_timeout_s: float | None = None,
) -> FastAPI:
    """Build the app; ``context_factory`` opens all resources in the lifespan and closes them after.

    ``request_timeout_s`` (None: no budget) answers 504 ``request_timeout`` to a request not answered in time.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with context_factory() as ctx:
            app.state.ctx = ctx
            yield

    app = FastAPI(
        title="hybridmem",
        version=__version__,
        description="Memory and retrieval cluster for AI agents: working (Redis), episodic (Postgres) "
        "and semantic (Qdrant) tiers behind one API. Authenticate with `Authorization: Bearer <key>`.",
        lifespan=lifespan,
    )
    if request_timeout_s is not None:  # innermost: its 504 still gets a request id and is measured
        app.add_middleware(RequestTimeoutMiddleware, timeout_s=request_timeout_s)
    app.add_middleware(
        RequestIdMiddleware,
        max_body_bytes=max_body_bytes,
        echo_request_id=not behind_serve_proxy,
    )
    if cors_origins:  # off unless origins are configured explicitly
        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    install_error_handlers(app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(render_latest(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: 200 while the app can serve (degraded stores named), 503 when no store answers",
    )
    async def readyz(ctx: Ctx) -> JSONResponse:
        # A store outage is not cured by taking this replica out of service: every replica shares the
        # stores, so only an app that can answer nothing (no store reachable) reports 503.
        report = await ctx.service.health()
        status = 200 if report.serving else 503
        headers = {} if report.serving else {"Retry-After": "5"}
        return JSONResponse(
            {"status": "ok" if report.ok else "degraded", "stores": report.stores},
            status_code=status,
            headers=headers,
        )

    @app.get("/v1/whoami", tags=["ops"], summary="The tenant and scopes of the calling API key")
    async def whoami(who: Reader) -> dict[str, object]:
        return {"tenant_id": who.tenant_id, "scopes": sorted(who.scopes), "key_name": who.key_name}

    app.include_router(routes_episodes.router)
    app.include_router(routes_state.router)
    for router in extra_routers:
        app.include_router(router)
    document(app)
    return app
