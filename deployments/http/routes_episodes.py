"""Episodes, transcripts and session context under /v1 (tenant from the API key)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from core.models import Episode, Transcript
from core.schemas import EpisodeIn, TranscriptIn
from deployments.http.deps import Ctx, Reader, Writer, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["episodes"])


class EpisodeBatchIn(BaseModel):
    episodes: list[EpisodeIn] = Field(min_length=1, description="Stored all-or-nothing")


class EpisodeBatchOut(BaseModel):
    ids: list[uuid.UUID]
    inserted: int
    duplicates: int


class EpisodePage(BaseModel):
    items: list[Episode]
    next_cursor: str | None


class SessionContextOut(BaseModel):
    session_id: str
    episodes: list[Episode]
    source: Literal["redis", "postgres"]
    degraded: list[str]


class TranscriptOut(BaseModel):
    transcript: Transcript
    created: bool


@router.post("/episodes", status_code=201, response_model=Episode, summary="Store one episode (durable)")
async def create_episode(body: EpisodeIn, ctx: Ctx, who: Writer) -> Episode:
    return await ctx.service.store_episode(who.tenant_id, body)


@router.post("/episodes/batch", status_code=201, response_model=EpisodeBatchOut, summary="Store episodes")
async def create_episodes(body: EpisodeBatchIn, ctx: Ctx, who: Writer) -> EpisodeBatchOut:
    stored = await ctx.service.store_episodes(who.tenant_id, body.episodes)
    return EpisodeBatchOut(
        ids=[e.id for e in stored.episodes], inserted=stored.inserted, duplicates=stored.duplicates
    )


@router.get("/episodes", response_model=EpisodePage, summary="List episodes (keyset pagination)")
async def list_episodes(
    ctx: Ctx,
    who: Reader,
    session_id: Annotated[str | None, Query(max_length=256)] = None,
    agent_id: Annotated[str | None, Query(max_length=256)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EpisodePage:
    items = await ctx.service.list_episodes(
        who.tenant_id, session_id=session_id, agent_id=agent_id, after=decode_cursor(cursor), limit=limit
    )
    nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(items) == limit else None
    return EpisodePage(items=items, next_cursor=nxt)


@router.get("/episodes/{episode_id}", response_model=Episode, summary="Get one episode")
async def get_episode(episode_id: uuid.UUID, ctx: Ctx, who: Reader) -> Episode:
    return await ctx.service.get_episode(who.tenant_id, episode_id)


@router.delete("/episodes/{episode_id}", status_code=204, summary="Delete an episode from every tier")
async def delete_episode(episode_id: uuid.UUID, ctx: Ctx, who: Writer) -> Response:
    await ctx.service.delete_episode(who.tenant_id, episode_id)
    return Response(status_code=204)


@router.post("/transcripts", status_code=201, response_model=TranscriptOut, summary="Store a transcript")
async def create_transcript(body: TranscriptIn, ctx: Ctx, who: Writer) -> TranscriptOut:
    transcript, created = await ctx.service.store_transcript(who.tenant_id, body)
    return TranscriptOut(transcript=transcript, created=created)


@router.get("/transcripts/{transcript_id}", response_model=Transcript, summary="Get a transcript")
async def get_transcript(transcript_id: uuid.UUID, ctx: Ctx, who: Reader) -> Transcript:
    return await ctx.service.get_transcript(who.tenant_id, transcript_id)


@router.get(
    "/sessions/{session_id}/context", response_model=SessionContextOut, summary="Recent turns of a session"
)
async def session_context(
    session_id: str,
    ctx: Ctx,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    read_preference: Literal["redis_first", "postgres_only"] = "redis_first",
) -> SessionContextOut:
    recent = await ctx.service.fetch_recent_context(
        who.tenant_id, session_id, limit=limit, read_preference=read_preference
    )
    return SessionContextOut(
        session_id=session_id, episodes=recent.episodes, source=recent.source, degraded=recent.degraded
    )
