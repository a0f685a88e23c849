"""FastAPI dependencies: the per-app context and the scope-checked principal, as Annotated aliases."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from core.auth import ApiKeyAuthenticator, Principal
from core.embedding.types import TextEmbedder
from core.errors import InvalidInput, StoreUnavailable
from core.ports import Retriever
from core.ratelimit import TokenBucketLimiter
from core.service import HybridMemoryService
from core.settings import Scope, Settings


@dataclass
class ApiContext:
    """Everything a route needs; built once per replica in the app's lifespan."""

    settings: Settings
    service: HybridMemoryService
    auth: ApiKeyAuthenticator
    retriever: Retriever | None = None  # the read path: the Retriever's handle, or in process
    embedder: TextEmbedder | None = None
    admin: Any = None  # consolidation admin operations
    limiter: TokenBucketLimiter | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def reader(self) -> Retriever:
        if self.retriever is None:
            raise StoreUnavailable("retriever", "the Retriever deployment is not bound")
        return self.retriever


# Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
# a worker thread, two thread hops per request for work that takes microseconds.


async def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]


async def get_embedder(request: Request) -> TextEmbedder:
    """The replica's embedder (the Embedder deployment's handle adapter)."""
    embedder = (await get_ctx(request)).embedder
    if embedder is None:
        raise StoreUnavailable("embedder", "the Embedder deployment is not bound")
    return embedder


async def _principal(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    raw = x_api_key
    if raw is None and authorization and authorization.lower().startswith("bearer "):
        raw = authorization[7:].strip()
    ctx = await get_ctx(request)
    principal = ctx.auth.authenticate(raw)
    if ctx.limiter is not None:
        ctx.limiter.check(principal.key_name or principal.tenant_id)
    request.state.principal = principal
    return principal


def require(scope: Scope) -> Any:
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        principal.require(scope)
        return principal

    return Depends(check)


Reader = Annotated[Principal, require("memory:read")]
Writer = Annotated[Principal, require("memory:write")]
Admin = Annotated[Principal, require("admin")]


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, ident = raw.split("|", 1)
        return datetime.fromisoformat(ts), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor", "malformed pagination cursor") from exc
