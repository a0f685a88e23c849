"""The client's exception tree, mirroring the API's error body ``{"error": {"code", "message", ...}}``.

HybridMemClientError
 ├── HybridMemTransportError       no usable HTTP response (connect failure, timeout)
 │    └── HybridMemTimeout         the call's timeout elapsed
 └── HybridMemAPIError             the API answered with an error status
      ├── BadRequest               400 and other unmapped 4xx
      ├── Unauthenticated          401 missing or unknown API key
      ├── Forbidden                403 the key lacks a scope
      ├── NotFound                 404
      ├── Conflict                 409
      ├── PayloadTooLarge          413 a configured limit was crossed
      ├── ValidationFailed         422 invalid request content (``field`` names it)
      ├── RateLimited              429 (``retry_after_s``)
      ├── ServerError              500 and other 5xx
      └── ServiceUnavailable       503 a store or the model is down (``retry_after_s``)
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any


class HybridMemClientError(Exception):
    """Root of every error the client raises."""


class HybridMemTransportError(HybridMemClientError):
    """The request got no usable HTTP response; ``maybe_sent`` is False when it never left (connect)."""

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class HybridMemTimeout(HybridMemTransportError):
    """The call's timeout elapsed before a response arrived."""


class HybridMemAPIError(HybridMemClientError):
    """The API answered with an error status; fields mirror its error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after_s = retry_after_s
        self.request_id = request_id


class BadRequest(HybridMemAPIError):
    pass


class Unauthenticated(HybridMemAPIError):
    pass


class Forbidden(HybridMemAPIError):
    pass


class NotFound(HybridMemAPIError):
    pass


class Conflict(HybridMemAPIError):
    pass


class PayloadTooLarge(HybridMemAPIError):
    pass


class ValidationFailed(HybridMemAPIError):
    pass


class RateLimited(HybridMemAPIError):
    pass


class ServerError(HybridMemAPIError):
    pass


class ServiceUnavailable(HybridMemAPIError):
    pass


_BY_STATUS: dict[int, type[HybridMemAPIError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def api_error(
    status: int, body: Any, headers: Mapping[str, str], *, fallback_message: str = ""
) -> HybridMemAPIError:
    """The typed error for an error response; tolerates bodies that are not ours (proxies, HTML)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    code = str(err.get("code") or ("http_error" if status < 500 else "server_error"))
    message = str(err.get("message") or fallback_message or f"HTTP {status}")
    field = err.get("field")
    details = {k: v for k, v in err.items() if k not in ("code", "message", "field")}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else BadRequest)
    return cls(
        status,
        code,
        message,
        field=str(field) if field is not None else None,
        details=details,
        retry_after_s=parse_retry_after(headers.get("retry-after")),
        request_id=headers.get("x-request-id"),
    )
