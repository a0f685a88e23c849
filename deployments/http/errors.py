"""The only place core errors become HTTP status codes. Every error body has a machine-readable code."""

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
        body = error_body(
            exc.code,
            exc.message,
            field=getattr(exc, "field", None),
            store=getattr(exc, "store", None),
            scope=getattr(exc, "scope", None),
        )
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        details = [
            {"field": _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in errs[:20]
        ]
        return JSONResponse(
            error_body(
                "invalid_input", f"{field}: {first.get('msg', 'invalid')}", field=field, details=details
            ),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a client error: log it with the request id, answer with the same error shape.
        rid = getattr(request.state, "request_id", None)
        log.exception("unhandled error", extra={"path": request.url.path, "request_id": rid})
        return JSONResponse(
            error_body("internal_error", "internal server error", request_id=rid), status_code=500
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded"}.get(
            exc.status_code, "http_error"
        )
        field = "body" if exc.status_code == 413 else None
        return JSONResponse(error_body(code, str(exc.detail), field=field), status_code=exc.status_code)
