"""End-to-end request budget (``request_timeout_s``): a request not answered in time gets a 504.

The deadline covers the work before the response starts; once the answer is being sent it is not cut.
A timed-out request is cancelled (its store calls with it), so a write it carried is normally rolled
back, but a client cannot tell: like any 504, retry writes with the same idempotency ``id``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.http.errors import error_body

log = logging.getLogger(__name__)


class RequestTimeoutMiddleware:
    """Pure ASGI middleware: ``timeout_s`` from the request's arrival to the first byte of its answer."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self._timeout_s)

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)  # the answer is on its way: no longer ours to cut
            await send(message)

        try:
            async with deadline:
                await self._app(scope, receive, send_started)
            return
        except TimeoutError:
            if not deadline.expired() or started:
                raise  # someone else's timeout, or too late to answer differently
        log.warning("request timed out", extra={"path": scope.get("path"), "timeout_s": self._timeout_s})
        response = JSONResponse(
            error_body(
                "request_timeout",
                f"the request was not answered within {self._timeout_s:g}s (request_timeout_s)",
            ),
            status_code=504,
        )
        await response(scope, receive, send)
