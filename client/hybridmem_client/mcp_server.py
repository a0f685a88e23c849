"""hybridmem as a Model Context Protocol server: an agent in an MCP client (Claude Desktop, Cursor, an IDE,
an agent framework) stores what happens and asks for context through tools.

    hybridmem-mcp --url http://127.0.0.1:8000 --key $HYBRIDMEM_API_KEY          # stdio (default)
    hybridmem-mcp --url http://127.0.0.1:8000 --key ... --http --port 8765      # streamable HTTP on /mcp

Every tool call is an API call made with the one key the server was started with: the tenant and the
scopes are that key's (a read-only key gets 403 on the write tools, as over HTTP). The server holds no
state of its own. Errors reach the model as tool errors carrying the API's message (status and field).

Needs the ``mcp`` extra: ``pip install 'hybridmem-client[mcp]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from hybridmem_client._endpoints import SearchFilters
from hybridmem_client._errors import HybridMemAPIError, HybridMemClientError
from hybridmem_client._version import __version__
from hybridmem_client.client import DEFAULT_BASE_URL, AsyncHybridMemClient
from hybridmem_client.models import Episode, MemoryRecord, Role, ScoredSnippet

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

DEFAULT_AGENT_ID = "mcp"
INSTRUCTIONS = (
    "Long-term memory for this agent. Call store_episode for what happens in the conversation (durable at "
    "once, searchable at once), remember for a fact worth keeping, get_context before answering to get the "
    "most relevant memories within a token budget, search for ranked hits with their ids, and "
    "update_memory / delete_memory to keep facts current."
)

TierName = Literal["working", "episodic", "semantic"]


class StoredEpisode(BaseModel):
    id: str
    session_id: str
    created_at: str


class Hit(BaseModel):
    content: str
    score: float
    tier: str
    kind: str | None = None
    source_ids: list[str] = Field(default_factory=list)
    created_at: str | None = None
    superseded_by: str | None = Field(None, description="Id of what replaced it (with include_superseded)")


class SearchAnswer(BaseModel):
    hits: list[Hit]
    degraded: list[str] = Field(default_factory=list, description="Tiers that did not answer")


class ContextAnswer(BaseModel):
    context: str = Field(description="The packed context, ready to put in a prompt")
    tokens_used: int
    token_budget: int
    sources: list[list[str]] = Field(description="Each packed snippet's source ids, in order")
    degraded: list[str] = Field(default_factory=list, description="Tiers that did not answer")


class Memory(BaseModel):
    id: str
    agent_id: str
    kind: str
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    updated_at: str


class MemoryVersionOut(BaseModel):
    version: int
    op: str
    content: str
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    changed_at: str
    changed_by: str | None = None


class MemoryHistory(BaseModel):
    memory_id: str
    versions: list[MemoryVersionOut]


class MemoryPage(BaseModel):
    memories: list[Memory]
    next_cursor: str | None = None


def _hit(s: ScoredSnippet) -> Hit:
    when = None if s.created_at is None else s.created_at.isoformat()
    return Hit(
        content=s.content, score=s.score, tier=s.tier, kind=s.kind, source_ids=s.source_ids, created_at=when,
        superseded_by=s.superseded_by,
    )  # fmt: skip


def _memory(m: MemoryRecord) -> Memory:
    return Memory(
        id=str(m.id), agent_id=m.agent_id, kind=m.kind, content=m.content, metadata=m.metadata,
        created_at=m.created_at.isoformat(), updated_at=m.updated_at.isoformat(),
    )  # fmt: skip


def _episode(e: Episode) -> StoredEpisode:
    return StoredEpisode(id=str(e.id), session_id=e.session_id, created_at=e.created_at.isoformat())


def _filters(agent_id: str | None, session_id: str | None, kind: str | None) -> SearchFilters:
    filters: SearchFilters = {}
    if agent_id:
        filters["agent_id"] = agent_id
    if session_id:
        filters["session_id"] = session_id
    if kind:
        filters["kind"] = kind
    return filters


def build_server(
    client: AsyncHybridMemClient, *, agent_id: str = DEFAULT_AGENT_ID, name: str = "hybridmem"
) -> MCPServer[Any]:
    """An MCP server whose tools call the hybridmem API through ``client`` (which carries the API key).

    ``agent_id`` is used for writes that name no agent."""
    try:  # imported here: the CLI that only parses options stays quick to start
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp_types import ToolAnnotations
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the hybridmem MCP server needs the MCP SDK: pip install 'hybridmem-client[mcp]'"
        ) from exc

    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
    write = ToolAnnotations(
        readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False
    )
    overwrite = ToolAnnotations(
        readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False
    )
    server: MCPServer[Any] = MCPServer(name=name, version=__version__, instructions=INSTRUCTIONS)

    def _agent(given: str | None) -> str:
        return given or agent_id

    def _time(name: str, value: str | None) -> datetime | None:
        """An ISO 8601 time with a timezone given to a tool, or a tool error naming the argument."""
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ToolError(f"{name}: not an ISO 8601 time: {value!r}") from exc
        if moment.tzinfo is None:
            raise ToolError(f"{name} must include a timezone (e.g. 2024-05-01T12:00:00Z)")
        return moment

    async def api(call: Any) -> Any:
        try:
            return await call
        except HybridMemAPIError as exc:
            field = f" (field {exc.field})" if exc.field else ""
            raise ToolError(f"hybridmem answered {exc}{field}") from exc
        except HybridMemClientError as exc:
            raise ToolError(f"hybridmem could not be reached: {exc}") from exc

    @server.tool(annotations=write)
    async def store_episode(
        content: str,
        session_id: str,
        role: Role = Role.USER,
        kind: str = "message",
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        supersedes: list[str] | None = None,
    ) -> StoredEpisode:
        """Store one event of a session (a message, an observation, a tool result) durably; it is
        searchable at once and consolidated into long-term memory later. ``supersedes``: ids of earlier
        episodes or memories it replaces (a changed fact); search and context leave those out."""
        episode = await api(
            client.store_episode(
                agent_id=_agent(agent_id),
                session_id=session_id,
                content=content,
                role=role,
                kind=kind,
                metadata=metadata,
                supersedes=supersedes,
            )
        )
        return _episode(episode)

    @server.tool(annotations=read_only)
    async def search(
        query: str,
        k: int = 10,
        agent_id: str | None = None,
        session_id: str | None = None,
        kind: str | None = None,
        tiers: list[TierName] | None = None,
        as_of: str | None = None,
        include_superseded: bool = False,
    ) -> SearchAnswer:
        """Ranked memories and episodes for a query (hybrid lexical + semantic), with their ids. Only what
        is current is found; ``as_of`` (ISO time) asks what was current then; ``include_superseded``
        finds replaced and expired items too."""
        result = await api(
            client.search(
                query,
                k=k,
                filters=_filters(agent_id, session_id, kind),
                tiers=tiers,
                as_of=_time("as_of", as_of),
                include_superseded=include_superseded,
            )
        )
        return SearchAnswer(hits=[_hit(h) for h in result.hits], degraded=result.degraded)

    @server.tool(annotations=read_only)
    async def get_context(
        query: str,
        token_budget: int = 1024,
        agent_id: str | None = None,
        session_id: str | None = None,
        as_of: str | None = None,
    ) -> ContextAnswer:
        """The most relevant memories for a query, packed into one text of at most ``token_budget``
        tokens (oldest first), ready to put into the prompt before answering; each line shows its time.
        ``as_of`` (ISO time): the context as it stood then."""
        result = await api(
            client.context(
                query,
                token_budget=token_budget,
                filters=_filters(agent_id, session_id, None),
                as_of=_time("as_of", as_of),
            )
        )
        return ContextAnswer(
            context=result.context, tokens_used=result.tokens_used, token_budget=result.token_budget,
            sources=[s.source_ids for s in result.snippets], degraded=result.degraded,
        )  # fmt: skip

    @server.tool(annotations=write)
    async def remember(
        content: str,
        kind: str = "fact",
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        supersedes: list[str] | None = None,
        valid_from: str | None = None,
        valid_to: str | None = None,
    ) -> Memory:
        """Store a long-term memory (a fact, a preference, a decision); returns it with its id.
        ``supersedes``: ids of memories or episodes it replaces; ``valid_from`` / ``valid_to`` (ISO times):
        when it holds."""
        record = await api(
            client.create_memory(
                agent_id=_agent(agent_id),
                content=content,
                kind=kind,
                session_id=session_id,
                metadata=metadata,
                supersedes=supersedes,
                valid_from=_time("valid_from", valid_from),
                valid_to=_time("valid_to", valid_to),
            )
        )
        return _memory(record)

    @server.tool(annotations=read_only)
    async def get_memory(memory_id: str) -> Memory:
        """One memory by id."""
        return _memory(await api(client.get_memory(memory_id)))

    @server.tool(annotations=read_only)
    async def list_memories(
        agent_id: str | None = None, cursor: str | None = None, limit: int = 20
    ) -> MemoryPage:
        """Memories, oldest first, one page at a time (pass ``next_cursor`` back to continue)."""
        page = await api(client.list_memories(agent_id=agent_id, cursor=cursor, limit=limit))
        return MemoryPage(memories=[_memory(m) for m in page.items], next_cursor=page.next_cursor)

    @server.tool(annotations=overwrite)
    async def update_memory(
        memory_id: str,
        content: str | None = None,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory:
        """Change a memory's content, kind or metadata (the fields given); it is re-embedded."""
        if content is None and kind is None and metadata is None:
            raise ToolError("give at least one of content, kind, metadata")
        record = await api(client.patch_memory(memory_id, content=content, kind=kind, metadata=metadata))
        return _memory(record)

    @server.tool(annotations=read_only)
    async def memory_history(memory_id: str) -> MemoryHistory:
        """Every version of a memory, oldest first: what it said at each write, when and by which key,
        and the delete if it was deleted (what changed, and what was known before)."""
        versions = await api(client.memory_history(memory_id))
        return MemoryHistory(
            memory_id=memory_id,
            versions=[
                MemoryVersionOut(
                    version=v.version,
                    op=v.op,
                    content=v.content,
                    kind=v.kind,
                    metadata=v.metadata,
                    changed_at=v.changed_at.isoformat(),
                    changed_by=v.changed_by,
                )
                for v in versions
            ],
        )

    @server.tool(annotations=overwrite)
    async def delete_memory(memory_id: str) -> str:
        """Delete a memory from every tier."""
        await api(client.delete_memory(memory_id))
        return f"deleted memory {memory_id}"

    return server


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hybridmem-mcp`` (also ``hybridmem mcp`` in the server's CLI)."""
    p.add_argument("--url", default=os.environ.get("HYBRIDMEM_URL", DEFAULT_BASE_URL),
                   help="hybridmem base URL (env HYBRIDMEM_URL; default %(default)s)")  # fmt: skip
    p.add_argument("--key", default=os.environ.get("HYBRIDMEM_API_KEY"),
                   help="API key the tools act with (env HYBRIDMEM_API_KEY)")  # fmt: skip
    p.add_argument("--agent-id", default=DEFAULT_AGENT_ID, help="agent id for writes that name none")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="with --http: address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="with --http: port (default %(default)s)")
    p.add_argument("--path", default="/mcp", help="with --http: endpoint path (default %(default)s)")


def serve(args: argparse.Namespace) -> int:
    """Serve until stdin closes (stdio) or until interrupted (``--http``)."""
    if not args.key:
        sys.stderr.write("hybridmem-mcp: no API key (--key or HYBRIDMEM_API_KEY); calls go unauthenticated\n")
    client = AsyncHybridMemClient(args.url, args.key)
    server = build_server(client, agent_id=args.agent_id)
    if args.http:
        sys.stderr.write(f"hybridmem MCP server on http://{args.host}:{args.port}{args.path} -> {args.url}\n")
        server.run("streamable-http", host=args.host, port=args.port, streamable_http_path=args.path)
    else:
        server.run("stdio")
    return 0


DESCRIPTION = "Serve hybridmem's memory tools over the Model Context Protocol (stdio by default)."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridmem-mcp", description=DESCRIPTION)
    add_arguments(parser)
    try:
        return serve(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
