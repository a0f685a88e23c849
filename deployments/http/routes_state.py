"""Scratchpads (working tier, TTL) and semantic memories (CRUD across Postgres + Qdrant) under /v1."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from core.models import MemoryRecord, MemoryVersion, ScratchpadEntry
from core.schemas import MemoryIn, MemoryPatch, ScratchpadIn
from deployments.http.deps import Ctx, Reader, Writer, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["state"])

AgentPath = Annotated[str, Path(min_length=1, max_length=256)]
KeyPath = Annotated[str, Path(min_length=1, max_length=256)]


class ScratchpadPage(BaseModel):
    items: list[ScratchpadEntry]
    next_cursor: str | None


class MemoryBatchIn(BaseModel):
    memories: list[MemoryIn] = Field(min_length=1)


class MemoryPage(BaseModel):
    items: list[MemoryRecord]
    next_cursor: str | None


@router.put(
    "/agents/{agent_id}/scratchpad/{key:path}",
    response_model=ScratchpadEntry,
    summary="Put a scratchpad value",
)
async def put_scratchpad(
    agent_id: AgentPath, key: KeyPath, body: ScratchpadIn, ctx: Ctx, who: Writer
) -> ScratchpadEntry:
    return await ctx.service.put_scratchpad(who.tenant_id, agent_id, key, body.value, body.ttl_s)


@router.get("/agents/{agent_id}/scratchpad/{key:path}", response_model=ScratchpadEntry, summary="Get a value")
async def get_scratchpad(agent_id: AgentPath, key: KeyPath, ctx: Ctx, who: Reader) -> ScratchpadEntry:
    return await ctx.service.get_scratchpad(who.tenant_id, agent_id, key)


@router.delete("/agents/{agent_id}/scratchpad/{key:path}", status_code=204, summary="Delete a value")
async def delete_scratchpad(agent_id: AgentPath, key: KeyPath, ctx: Ctx, who: Writer) -> Response:
    await ctx.service.delete_scratchpad(who.tenant_id, agent_id, key)
    return Response(status_code=204)


@router.get("/agents/{agent_id}/scratchpad", response_model=ScratchpadPage, summary="List an agent's values")
async def list_scratchpad(
    agent_id: AgentPath,
    ctx: Ctx,
    who: Reader,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ScratchpadPage:
    items, nxt = await ctx.service.list_scratchpads(who.tenant_id, agent_id, cursor=cursor, limit=limit)
    return ScratchpadPage(items=items, next_cursor=nxt)


@router.post("/memories", status_code=201, response_model=MemoryRecord, summary="Create or replace a memory")
async def create_memory(body: MemoryIn, ctx: Ctx, who: Writer) -> MemoryRecord:
    return await ctx.service.upsert_memory(who.tenant_id, body, changed_by=who.key_name)


@router.post("/memories/batch", status_code=201, response_model=list[MemoryRecord], summary="Upsert memories")
async def create_memories(body: MemoryBatchIn, ctx: Ctx, who: Writer) -> list[MemoryRecord]:
    return await ctx.service.upsert_memories(who.tenant_id, body.memories, changed_by=who.key_name)


@router.get("/memories", response_model=MemoryPage, summary="List memories (keyset pagination)")
async def list_memories(
    ctx: Ctx,
    who: Reader,
    agent_id: Annotated[str | None, Query(max_length=256)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MemoryPage:
    items = await ctx.service.list_memories(
        who.tenant_id, agent_id=agent_id, after=decode_cursor(cursor), limit=limit
    )
    nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(items) == limit else None
    return MemoryPage(items=items, next_cursor=nxt)


@router.get("/memories/{memory_id}", response_model=MemoryRecord, summary="Get a memory")
async def get_memory(memory_id: uuid.UUID, ctx: Ctx, who: Reader) -> MemoryRecord:
    return await ctx.service.get_memory(who.tenant_id, memory_id)


@router.patch("/memories/{memory_id}", response_model=MemoryRecord, summary="Update a memory (re-indexed)")
async def patch_memory(memory_id: uuid.UUID, body: MemoryPatch, ctx: Ctx, who: Writer) -> MemoryRecord:
    return await ctx.service.patch_memory(who.tenant_id, memory_id, body, changed_by=who.key_name)


@router.delete("/memories/{memory_id}", status_code=204, summary="Delete a memory from every tier")
async def delete_memory(memory_id: uuid.UUID, ctx: Ctx, who: Writer) -> Response:
    await ctx.service.delete_memory(who.tenant_id, memory_id, changed_by=who.key_name)
    return Response(status_code=204)


@router.get(
    "/memories/{memory_id}/history",
    response_model=list[MemoryVersion],
    summary="Every version of a memory (creates, updates, the delete), oldest first",
)
async def memory_history(memory_id: uuid.UUID, ctx: Ctx, who: Reader) -> list[MemoryVersion]:
    return await ctx.service.memory_history(who.tenant_id, memory_id)
