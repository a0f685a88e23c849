"""One exception tree for the whole product.

    HybridMemError
     ├── InvalidInput            bad request content (field named)          -> 422
     │    └── LimitExceeded      a configured size/count limit was crossed   -> 413
     ├── NotFound                no such record for this tenant              -> 404
     ├── Conflict                write clashes with existing state           -> 409
     ├── AuthError
     │    ├── Unauthenticated    missing or unknown API key                  -> 401
     │    └── Forbidden          key lacks the scope                          -> 403
     ├── RateLimited             per-key rate limit                          -> 429
     ├── StoreUnavailable        Redis / Postgres / Qdrant unreachable       -> 503 + Retry-After
     └── EmbeddingError          the embedding model failed
          └── ModelUnavailable   no model could be loaded                    -> 503

Store adapters translate driver errors (``raise StoreUnavailable("redis") from exc``);
only the ingress maps these to HTTP status codes.
"""

from __future__ import annotations

from typing import Any


class HybridMemError(Exception):
    """Root of every error hybridmem raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments; rebuild from state so errors raised in one Ray
        # process (a Retriever replica) arrive intact in another (the Ingress) and keep their 4xx.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[HybridMemError], message: str, state: dict[str, Any]) -> HybridMemError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class InvalidInput(HybridMemError):
    """The request content is invalid; ``field`` names the offending field (dotted path)."""

    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LimitExceeded(InvalidInput):
    """A configured limit (size, count, depth, range) was crossed."""

    code = "limit_exceeded"

    def __init__(self, field: str, limit: int | float, actual: int | float, unit: str = "") -> None:
        unit_s = f" {unit}" if unit else ""
        super().__init__(field, f"{actual}{unit_s} exceeds the limit of {limit}{unit_s}")
        self.limit = limit
        self.actual = actual


class NotFound(HybridMemError):
    code = "not_found"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(HybridMemError):
    code = "conflict"


class AuthError(HybridMemError):
    code = "auth_error"


class Unauthenticated(AuthError):
    code = "unauthenticated"


class Forbidden(AuthError):
    code = "forbidden"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the {scope!r} scope")
        self.scope = scope


class RateLimited(HybridMemError):
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class StoreUnavailable(HybridMemError):
    """A backing store cannot be reached; the request may be retried later."""

    code = "store_unavailable"

    def __init__(self, store: str, detail: str = "", retry_after_s: int = 5) -> None:
        msg = f"{store} is unavailable" + (f": {detail}" if detail else "")
        super().__init__(msg)
        self.store = store
        self.retry_after_s = retry_after_s


class EmbeddingError(HybridMemError):
    code = "embedding_error"


class ModelUnavailable(EmbeddingError):
    code = "model_unavailable"
