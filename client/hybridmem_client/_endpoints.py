"""The API's method table, written once as flows; both clients inherit it (see ``_method.endpoint``)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from hybridmem_client._errors import HybridMemTimeout
from hybridmem_client._flow import Flow, Request, RetryPolicy, Sleep, call
from hybridmem_client._method import endpoint
from hybridmem_client.ids import new_write_id
from hybridmem_client.models import (
    Episode,
    EpisodeIn,
    MemoryIn,
    MemoryPatch,
    MemoryRecord,
    MemoryVersion,
    Role,
    ScratchpadEntry,
    Transcript,
    TranscriptIn,
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

M = TypeVar("M")
Mode = Literal["hybrid", "vector", "lexical"]
TierName = Literal["working", "episodic", "semantic"]
Id = uuid.UUID | str


class SearchFilters(TypedDict, total=False):
    """Filters of ``search``/``context``; the tenant always comes from the API key."""

    agent_id: str
    session_id: str
    kind: str | list[str]
    created_after: datetime | str
    created_before: datetime | str
    metadata: dict[str, str | int | float | bool]


def _parser(model: type[M]) -> Callable[[httpx.Response], M]:
    adapter: TypeAdapter[M] = TypeAdapter(model)
    return lambda response: adapter.validate_json(response.content)


def _nothing(response: httpx.Response) -> None:
    return None


def _seg(value: Any) -> str:
    """One URL path segment, escaped (scratchpad keys may hold ``/``)."""
    return quote(str(value), safe="")


def _body(item: BaseModel | Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    obj = item if isinstance(item, model) else model.model_validate(item)
    return obj.model_dump(mode="json", exclude_none=True)


def _write(item: BaseModel | Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The body of a write, with an idempotency key: the caller's ``id`` or a fresh one.

    The server derives the row id from it, so a retried write (after a timeout or a 503 sent after the
    durable commit) overwrites the same row instead of storing another copy."""
    body = _body(item, model)
    body.setdefault("id", new_write_id())
    return body


def _currency(as_of: datetime | None, include_superseded: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if as_of is not None:
        out["as_of"] = as_of.isoformat()
    if include_superseded:
        out["include_superseded"] = True
    return out


def _filters(filters: SearchFilters | Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (filters or {}).items():
        if value is not None:
            out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class ApiMethods:
    """Every endpoint of the hybridmem API. Subclasses provide ``_run`` and ``_is_async``."""

    _policy: RetryPolicy
    _timeout: float | None

    def _call(self, request: Request, parse: Callable[[httpx.Response], M]) -> Flow[M]:
        if request.timeout is None and self._timeout is not None:
            request = dataclasses.replace(request, timeout=self._timeout)
        return call(request, self._policy, parse)

    # ---- ops ---------------------------------------------------------------------------------------

    @endpoint
    def readyz(self) -> Flow[ReadyReport]:
        """Readiness of every store: ``status`` "degraded" names the stores that are down (HTTP 200 while the
        app can still serve, 503 when no store answers)."""
        return self._call(
            Request("GET", "/readyz", retry=False, accept=frozenset({503})), _parser(ReadyReport)
        )

    @endpoint
    def whoami(self) -> Flow[Identity]:
        """The tenant and scopes of this client's API key."""
        return self._call(Request("GET", "/v1/whoami"), _parser(Identity))

    # ---- episodes and transcripts -------------------------------------------------------------------

    @endpoint
    def store_episode(
        self,
        *,
        agent_id: str,
        session_id: str,
        content: str,
        role: Role | str = Role.USER,
        kind: str = "message",
        metadata: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
        id: str | None = None,
        supersedes: Sequence[str] | None = None,
    ) -> Flow[Episode]:
        """Store one episode durably; ``id`` is an idempotency key (a replay stores it once; when none is
        given the client makes one, so its own retries never store a second copy). ``supersedes``: ids (or
        client keys) of earlier episodes or memories it replaces; search and context leave those out."""
        body = _write(
            {"id": id, "agent_id": agent_id, "session_id": session_id, "role": role, "kind": kind,
             "content": content, "metadata": dict(metadata or {}), "created_at": created_at,
             "supersedes": None if supersedes is None else [str(s) for s in supersedes]},
            EpisodeIn,
        )  # fmt: skip
        return self._call(Request("POST", "/v1/episodes", json=body, idempotent=True), _parser(Episode))

    @endpoint
    def store_episodes(self, episodes: Sequence[EpisodeIn | Mapping[str, Any]]) -> Flow[EpisodeBatchResult]:
        """Store several episodes all-or-nothing."""
        body = {"episodes": [_write(e, EpisodeIn) for e in episodes]}
        return self._call(
            Request("POST", "/v1/episodes/batch", json=body, idempotent=True), _parser(EpisodeBatchResult)
        )

    @endpoint
    def get_episode(self, episode_id: Id) -> Flow[Episode]:
        return self._call(Request("GET", f"/v1/episodes/{_seg(episode_id)}"), _parser(Episode))

    @endpoint
    def list_episodes(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Flow[Page[Episode]]:
        """One page of episodes, oldest first; ``next_cursor`` continues."""
        params = _query(session_id=session_id, agent_id=agent_id, cursor=cursor, limit=limit)
        return self._call(Request("GET", "/v1/episodes", params=params), _parser(Page[Episode]))

    @endpoint
    def delete_episode(self, episode_id: Id) -> Flow[None]:
        """Delete an episode from every tier."""
        return self._call(Request("DELETE", f"/v1/episodes/{_seg(episode_id)}"), _nothing)

    @endpoint
    def store_transcript(self, transcript: TranscriptIn | Mapping[str, Any]) -> Flow[TranscriptResult]:
        """Store a multi-party transcript; each turn also becomes an episode."""
        body = _write(transcript, TranscriptIn)
        return self._call(
            Request("POST", "/v1/transcripts", json=body, idempotent=True), _parser(TranscriptResult)
        )

    @endpoint
    def get_transcript(self, transcript_id: Id) -> Flow[Transcript]:
        return self._call(Request("GET", f"/v1/transcripts/{_seg(transcript_id)}"), _parser(Transcript))

    @endpoint
    def session_context(
        self,
        session_id: str,
        *,
        limit: int = 20,
        read_preference: Literal["redis_first", "postgres_only"] = "redis_first",
    ) -> Flow[SessionContext]:
        """The most recent turns of a session (from the Redis buffer when it is up)."""
        params = {"limit": limit, "read_preference": read_preference}
        path = f"/v1/sessions/{_seg(session_id)}/context"
        return self._call(Request("GET", path, params=params), _parser(SessionContext))

    # ---- scratchpads ------------------------------------------------------------------------------

    @endpoint
    def put_scratchpad(
        self, agent_id: str, key: str, value: Any, *, ttl_s: int | None = None
    ) -> Flow[ScratchpadEntry]:
        """Set a keyed JSON value in the agent's working memory (expires after ``ttl_s``)."""
        path = f"/v1/agents/{_seg(agent_id)}/scratchpad/{_seg(key)}"
        body = {"value": value} | _query(ttl_s=ttl_s)
        return self._call(Request("PUT", path, json=body), _parser(ScratchpadEntry))

    @endpoint
    def get_scratchpad(self, agent_id: str, key: str) -> Flow[ScratchpadEntry]:
        path = f"/v1/agents/{_seg(agent_id)}/scratchpad/{_seg(key)}"
        return self._call(Request("GET", path), _parser(ScratchpadEntry))

    @endpoint
    def delete_scratchpad(self, agent_id: str, key: str) -> Flow[None]:
        path = f"/v1/agents/{_seg(agent_id)}/scratchpad/{_seg(key)}"
        return self._call(Request("DELETE", path), _nothing)

    @endpoint
    def list_scratchpad(
        self, agent_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Flow[Page[ScratchpadEntry]]:
        path = f"/v1/agents/{_seg(agent_id)}/scratchpad"
        params = _query(cursor=cursor, limit=limit)
        return self._call(Request("GET", path, params=params), _parser(Page[ScratchpadEntry]))

    # ---- semantic memories ------------------------------------------------------------------------

    @endpoint
    def create_memory(
        self,
        *,
        agent_id: str,
        content: str,
        kind: str = "fact",
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source_ids: Sequence[str] = (),
        id: str | None = None,
        index: bool = True,
        supersedes: Sequence[str] | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
    ) -> Flow[MemoryRecord]:
        """Create (or, with the same ``id``, replace) a memory; durable, then embedded and indexed
        (``index`` False: stored and listed, never embedded or found by a search). ``supersedes``: ids
        (or client keys) of what it replaces; ``valid_from`` / ``valid_to`` (exclusive): when it holds."""
        body = _write(
            {"id": id, "agent_id": agent_id, "session_id": session_id, "kind": kind, "content": content,
             "metadata": dict(metadata or {}), "source_ids": list(source_ids), "index": index,
             "supersedes": None if supersedes is None else [str(s) for s in supersedes],
             "valid_from": valid_from, "valid_to": valid_to},
            MemoryIn,
        )  # fmt: skip
        return self._call(Request("POST", "/v1/memories", json=body, idempotent=True), _parser(MemoryRecord))

    @endpoint
    def create_memories(self, memories: Sequence[MemoryIn | Mapping[str, Any]]) -> Flow[list[MemoryRecord]]:
        body = {"memories": [_write(m, MemoryIn) for m in memories]}
        return self._call(
            Request("POST", "/v1/memories/batch", json=body, idempotent=True), _parser(list[MemoryRecord])
        )

    @endpoint
    def get_memory(self, memory_id: Id) -> Flow[MemoryRecord]:
        return self._call(Request("GET", f"/v1/memories/{_seg(memory_id)}"), _parser(MemoryRecord))

    @endpoint
    def list_memories(
        self, *, agent_id: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> Flow[Page[MemoryRecord]]:
        params = _query(agent_id=agent_id, cursor=cursor, limit=limit)
        return self._call(Request("GET", "/v1/memories", params=params), _parser(Page[MemoryRecord]))

    @endpoint
    def patch_memory(
        self,
        memory_id: Id,
        *,
        content: str | None = None,
        kind: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        index: bool | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
    ) -> Flow[MemoryRecord]:
        """Update the given fields; a changed memory is re-embedded (``index`` turns indexing on or off;
        ``valid_from`` / ``valid_to`` set its validity)."""
        patch = {"content": content, "kind": kind, "metadata": None if metadata is None else dict(metadata),
                 "index": index, "valid_from": valid_from, "valid_to": valid_to}  # fmt: skip
        body = _body(patch, MemoryPatch)
        path = f"/v1/memories/{_seg(memory_id)}"
        return self._call(Request("PATCH", path, json=body), _parser(MemoryRecord))

    @endpoint
    def memory_history(self, memory_id: Id) -> Flow[list[MemoryVersion]]:
        """Every version of a memory, oldest first: each create and update, and the delete."""
        path = f"/v1/memories/{_seg(memory_id)}/history"
        return self._call(Request("GET", path), _parser(list[MemoryVersion]))

    @endpoint
    def delete_memory(self, memory_id: Id) -> Flow[None]:
        return self._call(Request("DELETE", f"/v1/memories/{_seg(memory_id)}"), _nothing)

    # ---- retrieval --------------------------------------------------------------------------------

    @endpoint
    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: Mode = "hybrid",
        filters: SearchFilters | None = None,
        tiers: Sequence[TierName] | None = None,
        diversify: bool = True,
        as_of: datetime | None = None,
        include_superseded: bool = False,
    ) -> Flow[SearchResult]:
        """Ranked hits over the three tiers, fused (``k`` None: the server's ``retrieval.default_k``).
        ``diversify`` False: plain relevance order, near-duplicate texts kept, no MMR. ``as_of``: what was
        current then; ``include_superseded``: superseded and expired items too, with their relation."""
        body: dict[str, Any] = {"query": query, "mode": mode, "filters": _filters(filters)}
        body |= _currency(as_of, include_superseded)
        if k is not None:
            body["k"] = k
        if not diversify:
            body["diversify"] = False
        if tiers is not None:
            body["tiers"] = list(tiers)
        return self._call(Request("POST", "/v1/search", json=body, idempotent=True), _parser(SearchResult))

    @endpoint
    def context(
        self,
        query: str,
        *,
        token_budget: int | None = None,
        filters: SearchFilters | None = None,
        tier_quotas: Mapping[TierName, int] | None = None,
        chronological: bool = True,
        candidates: int | None = None,
        mode: Mode = "hybrid",
        tiers: Sequence[TierName] | None = None,
        dedupe: bool = True,
        as_of: datetime | None = None,
        include_superseded: bool = False,
    ) -> Flow[ContextResult]:
        """The best context for ``query`` that fits ``token_budget``, with each snippet's sources.

        ``token_budget`` and ``candidates`` None: the server's ``retrieval.default_token_budget`` and
        ``retrieval.context_candidates``. ``dedupe`` False packs repeats too (sentences already packed, a
        summary beside its turns). ``as_of`` and ``include_superseded`` as in :meth:`search`."""
        body: dict[str, Any] = {
            "query": query, "filters": _filters(filters), "chronological": chronological, "mode": mode,
        }  # fmt: skip
        body |= _currency(as_of, include_superseded)
        if token_budget is not None:
            body["token_budget"] = token_budget
        if candidates is not None:
            body["candidates"] = candidates
        if tiers is not None:
            body["tiers"] = list(tiers)
        if tier_quotas is not None:
            body["tier_quotas"] = dict(tier_quotas)
        if not dedupe:
            body["dedupe"] = False
        return self._call(Request("POST", "/v1/context", json=body, idempotent=True), _parser(ContextResult))

    @endpoint
    def embed(self, texts: Sequence[str]) -> Flow[EmbeddingResult]:
        """Vectors of ``texts`` from the served model (native batch endpoint)."""
        body = {"texts": list(texts)}
        return self._call(
            Request("POST", "/v1/embeddings/batch", json=body, idempotent=True), _parser(EmbeddingResult)
        )

    # ---- admin ------------------------------------------------------------------------------------

    @endpoint
    def consolidate(
        self, *, partitions: Sequence[int] | None = None, parallelism: int | None = None
    ) -> Flow[ConsolidationRun]:
        """Start a consolidation run (admin scope); 409 while another run is in progress."""
        body = _query(partitions=None if partitions is None else list(partitions), parallelism=parallelism)
        return self._call(Request("POST", "/v1/admin/consolidations", json=body), _parser(ConsolidationRun))

    @endpoint
    def get_consolidation(self, run_id: Id) -> Flow[ConsolidationRun]:
        path = f"/v1/admin/consolidations/{_seg(run_id)}"
        return self._call(Request("GET", path), _parser(ConsolidationRun))

    @endpoint
    def list_consolidations(self, *, limit: int = 20) -> Flow[list[ConsolidationRun]]:
        params = {"limit": limit}
        return self._call(
            Request("GET", "/v1/admin/consolidations", params=params), _parser(list[ConsolidationRun])
        )

    @endpoint
    def wait_consolidation(
        self, run_id: Id, *, poll_s: float = 1.0, timeout_s: float = 600.0
    ) -> Flow[ConsolidationRun]:
        """Poll a run until it is no longer running; :class:`HybridMemTimeout` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = yield from self._call(
                Request("GET", f"/v1/admin/consolidations/{_seg(run_id)}"), _parser(ConsolidationRun)
            )
            if run.done:
                return run
            if time.monotonic() + poll_s > deadline:
                raise HybridMemTimeout(f"consolidation run {run_id} still {run.status} after {timeout_s}s")
            yield Sleep(poll_s)
