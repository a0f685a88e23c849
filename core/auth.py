"""API keys: a key fixes one tenant and a set of scopes. Keys are stored and compared as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import Forbidden, Unauthenticated
from core.settings import ApiKeySpec, Scope


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant comes from the key, never from the request body."""

    tenant_id: str
    scopes: frozenset[str]
    key_name: str

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(scope)


class ApiKeyAuthenticator:
    """Looks a raw key up by its hash; the raw key is never stored or logged."""

    def __init__(self, specs: Iterable[ApiKeySpec]) -> None:
        self._by_hash = {s.key_sha256.lower(): s for s in specs}

    def authenticate(self, raw_key: str | None) -> Principal:
        if not raw_key:
            raise Unauthenticated("missing API key (send 'Authorization: Bearer <key>' or 'X-API-Key')")
        digest = hashlib.sha256(raw_key.encode()).hexdigest()
        spec = self._by_hash.get(digest)
        # compare_digest keeps the final check constant-time with respect to the stored hash
        if spec is None or not hmac.compare_digest(spec.key_sha256.lower(), digest):
            raise Unauthenticated("invalid API key")
        # key_name identifies the key for rate limits and logs: its name, else a short hash (never the key)
        name = spec.name or f"key-{digest[:12]}"
        return Principal(tenant_id=spec.tenant_id, scopes=frozenset(spec.scopes), key_name=name)


def new_api_key(prefix: str = "hm") -> str:
    """A fresh random key (``hm_`` + 43 url-safe chars)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"
