"""The only place core errors become HTTP status codes. Every error body has a machine-readable code.

hybridmem's own routes answer ``{"error": {"code", "message", "field", ...}}``. The OpenAI-compatible
routes (``POST /v1/embeddings``, ``GET /v1/models[/{id}]``) answer in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, and with 400 where hybridmem says 422, as OpenAI
does, so that OpenAI's client libraries raise their own exception types with the message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.HybridMemError], int]] = [
    (errors.LimitExceeded, 413),
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.RateLimited, 429),
    (errors.StoreUnavailable, 503),
    (errors.ModelUnavailable, 503),
    (errors.EmbeddingError, 500),
]


def status_of(exc: errors.HybridMemError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}


def is_openai_route(path: str) -> bool:
    return path in ("/v1/embeddings", "/v1/models") or path.startswith("/v1/models/")


def _openai_error(
    path: str, status: int, code: str, message: str, field: str | None
) -> tuple[int, dict[str, Any]]:
    if status == 422 or (status == 413 and field != "body"):  # invalid input; a too-large body stays 413
        status = 400
    if status == 401:
        code = "invalid_api_key"
    elif status == 404 and path.startswith("/v1/models"):
        code = "model_not_found"
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    return status, {"error": {"message": message, "type": kind, "param": field, "code": code}}


def error_response(
    path: str,
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The error answer for a request to ``path``: hybridmem's shape, or OpenAI's on its routes."""
    if is_openai_route(path):
        status, body = _openai_error(path, status, code, message, field)
    else:
        body = error_body(code, message, field=field, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in (loc[1:] if loc[:1] in (("body",), ("query",), ("path",), ("header",)) else loc)]
    out = ""
    for p in parts:
        if p == "[key]":  # pydantic's marker for "the key itself is invalid": the key is already named
            continue
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.HybridMemError)
    async def _domain(request: Request, exc: errors.HybridMemError) -> JSONResponse:
        status = status_of(exc)
        headers: dict[str, str] = {}
        if isinstance(exc, errors.StoreUnavailable):
            headers["Retry-After"] = str(exc.retry_after_s)
            log.warning("store unavailable", extra={"store": exc.store, "path": request.url.path})
        if isinstance(exc, errors.RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        if isinstance(exc, errors.Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(
            request.url.path,
            status,
            exc.code,
            exc.message,
            field=getattr(exc, "field", None),
            headers=headers,
            store=getattr(exc, "store", None),
            scope=getattr(exc, "scope", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        details = [
            {"field": _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in errs[:20]
        ]
        return error_response(
            request.url.path,
            422,
            "invalid_input",
            f"{field}: {first.get('msg', 'invalid')}",
            field=field,
            details=details,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a client error: log it with the request id, answer with the same error shape.
        rid = getattr(request.state, "request_id", None)
        log.exception("unhandled error", extra={"path": request.url.path, "request_id": rid})
        return error_response(
            request.url.path, 500, "internal_error", "internal server error", request_id=rid
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not read (not UTF-8, say): invalid input, as JSON
            return error_response(request.url.path, 422, "invalid_input", f"body: {exc.detail}", field="body")
        code = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded"}.get(
            exc.status_code, "http_error"
        )
        field = "body" if exc.status_code == 413 else None
        return error_response(request.url.path, exc.status_code, code, str(exc.detail), field=field)
