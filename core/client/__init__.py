"""Python client for the hybridmem API: :class:`HybridMemClient` (blocking), :class:`AsyncHybridMemClient`.

The LangGraph store lives in :mod:`core.client.langgraph_store` (extra ``hybridmem[langgraph]``).
"""

from core.client._endpoints import SearchFilters
from core.client._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HybridMemAPIError,
    HybridMemClientError,
    HybridMemTimeout,
    HybridMemTransportError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from core.client._flow import NO_RETRY, RetryPolicy
from core.client.client import AsyncHybridMemClient, HybridMemClient
from core.client.responses import (
    ConsolidationRun,
    ContextResult,
    EmbeddingResult,
    EpisodeBatchResult,
    Identity,
    Page,
    ReadyReport,
    SearchResult,
    SessionContext,
    TranscriptResult,
)

__all__ = [
    "NO_RETRY",
    "AsyncHybridMemClient",
    "BadRequest",
    "Conflict",
    "ConsolidationRun",
    "ContextResult",
    "EmbeddingResult",
    "EpisodeBatchResult",
    "Forbidden",
    "HybridMemAPIError",
    "HybridMemClient",
    "HybridMemClientError",
    "HybridMemTimeout",
    "HybridMemTransportError",
    "Identity",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "RateLimited",
    "ReadyReport",
    "RetryPolicy",
    "SearchFilters",
    "SearchResult",
    "ServerError",
    "ServiceUnavailable",
    "SessionContext",
    "TranscriptResult",
    "Unauthenticated",
    "ValidationFailed",
]
