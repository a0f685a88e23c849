"""The client package's public surface, pinned (as httpx pins its ``__all__``), and its independence from
the server: importing it, its LangGraph store or its MCP server loads nothing of the server's."""

from __future__ import annotations

import json
import subprocess
import sys

import hybridmem_client

PUBLIC = [
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


def test_public_api_is_pinned() -> None:
    assert hybridmem_client.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(hybridmem_client, name) is not None
        if name != "__version__" and not name.isupper():
            assert getattr(hybridmem_client, name).__module__.startswith("hybridmem_client"), name


def test_the_server_uses_the_clients_wire_models() -> None:
    """One definition: the server's models are the client's, not copies that could drift."""
    from core import models, schemas

    for name in ("Episode", "MemoryRecord", "ScoredSnippet", "ScratchpadEntry", "Transcript", "Role", "Tier"):
        assert getattr(models, name) is getattr(hybridmem_client, name)
    for name in ("EpisodeIn", "MemoryIn", "MemoryPatch", "TranscriptIn"):
        assert getattr(schemas, name) is getattr(hybridmem_client, name)


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = (
        "import json, sys\n"
        "import hybridmem_client, hybridmem_client.langgraph_store, hybridmem_client.mcp_server\n"
        "hybridmem_client.mcp_server.build_server(hybridmem_client.AsyncHybridMemClient())\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "mcp" in loaded and "langgraph" in loaded
    assert not loaded & {"core", "deployments", "jobs", "ray", "torch", "qdrant_client", "asyncpg", "redis"}
