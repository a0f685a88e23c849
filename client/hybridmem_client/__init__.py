"""Python client for the hybridmem API: :class:`HybridMemClient` (blocking), :class:`AsyncHybridMemClient`.

Dependencies: httpx and pydantic only. The LangGraph store lives in :mod:`hybridmem_client.langgraph_store`
(extra ``hybridmem-client[langgraph]``), the MCP server in :mod:`hybridmem_client.mcp_server` (extra
``hybridmem-client[mcp]``, command ``hybridmem-mcp``).
"""

from hybridmem_client._endpoints import SearchFilters
from hybridmem_client._errors import (
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
from hybridmem_client._flow import NO_RETRY, RetryPolicy
from hybridmem_client._version import __version__
from hybridmem_client.client import AsyncHybridMemClient, HybridMemClient
from hybridmem_client.models import (
    Episode,
    EpisodeIn,
    MemoryIn,
    MemoryPatch,
    MemoryRecord,
    MemoryVersion,
    Role,
    ScoredSnippet,
    ScratchpadEntry,
    Tier,
    Transcript,
    TranscriptIn,
    TranscriptTurn,
    TranscriptTurnIn,
)
from hybridmem_client.responses import (
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
    "Episode",
    "EpisodeBatchResult",
    "EpisodeIn",
    "Forbidden",
    "HybridMemAPIError",
    "HybridMemClient",
    "HybridMemClientError",
    "HybridMemTimeout",
    "HybridMemTransportError",
    "Identity",
    "MemoryIn",
    "MemoryPatch",
    "MemoryRecord",
    "MemoryVersion",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "RateLimited",
    "ReadyReport",
    "RetryPolicy",
    "Role",
    "ScoredSnippet",
    "ScratchpadEntry",
    "SearchFilters",
    "SearchResult",
    "ServerError",
    "ServiceUnavailable",
    "SessionContext",
    "Tier",
    "Transcript",
    "TranscriptIn",
    "TranscriptResult",
    "TranscriptTurn",
    "TranscriptTurnIn",
    "Unauthenticated",
    "ValidationFailed",
    "__version__",
]
