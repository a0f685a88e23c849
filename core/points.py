"""How records become semantic-tier points: deterministic ids and one payload shape for every writer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from core.ids import deterministic_id
from core.models import Episode, MemoryRecord, ModelVersion, SparseVector, VectorPoint
from core.retrieval.quality import chunk_texts
from core.stores.vector_filters import START_FIELD, SUPERSEDED_FIELD, VALID_FROM_FIELD, VALID_TO_FIELD

RecordType = Literal["episode", "summary", "memory"]


def point_id(tenant_id: str, record_type: RecordType, source_id: str, version: ModelVersion) -> uuid.UUID:
    """Same record + same model version → same point: replays and retries overwrite, never duplicate."""
    return deterministic_id(tenant_id, record_type, source_id, version.key)


@dataclass(frozen=True, slots=True)
class Currency:
    """When a record holds: its validity interval (memories) and what superseded it, from when."""

    valid_from: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: uuid.UUID | None = None
    superseded_at: datetime | None = None

    @classmethod
    def of(cls, record: Episode | MemoryRecord) -> Currency:
        return cls(
            valid_from=getattr(record, "valid_from", None),
            valid_to=getattr(record, "valid_to", None),
            superseded_by=record.superseded_by,
            superseded_at=record.superseded_at,
        )

    def payload(self, created_at: datetime) -> dict[str, Any]:
        """The payload fields the currency conditions read (core.stores.vector_filters)."""
        out: dict[str, Any] = {START_FIELD: (self.valid_from or created_at).timestamp()}
        if self.valid_from is not None:
            out[VALID_FROM_FIELD] = self.valid_from.timestamp()
        if self.valid_to is not None:
            out[VALID_TO_FIELD] = self.valid_to.timestamp()
        if self.superseded_at is not None:
            out[SUPERSEDED_FIELD] = self.superseded_at.timestamp()
            out["superseded_by"] = str(self.superseded_by) if self.superseded_by else None
        return out


def payload(
    *,
    tenant_id: str,
    record_type: RecordType,
    record_id: str,
    agent_id: str,
    session_id: str | None,
    kind: str,
    content: str,
    created_at: datetime,
    source_ids: Sequence[str],
    version: ModelVersion,
    metadata: dict[str, Any],
    role: str | None = None,
    updated_at: datetime | None = None,
    currency: Currency | None = None,
) -> dict[str, Any]:
    extra = {} if updated_at is None else {"updated_ts": updated_at.timestamp()}
    extra |= (currency or Currency()).payload(created_at)
    return {
        "tenant_id": tenant_id,
        "record_type": record_type,
        "record_id": record_id,
        "agent_id": agent_id,
        "session_id": session_id,
        "kind": kind,
        "role": role,
        "content": content,
        "created_at": created_at.isoformat(),
        "created_ts": created_at.timestamp(),
        "source_ids": list(source_ids),
        "model_version": version.key,
        "model_name": version.name,
        "model_revision": version.revision,
        "dimension": version.dimension,
        "metadata": metadata,
        **extra,
    }


def memory_point(
    record: MemoryRecord, vector: Sequence[float], version: ModelVersion, *, terms: SparseVector | None = None
) -> VectorPoint:
    """``terms``: the record's BM25 vector (core.retrieval.bm25_sparse), for lexical search in the engine."""
    return VectorPoint(
        id=point_id(record.tenant_id, "memory", str(record.id), version),
        vector=list(vector),
        sparse=terms,
        payload=payload(
            tenant_id=record.tenant_id,
            record_type="memory",
            record_id=str(record.id),
            agent_id=record.agent_id,
            session_id=record.session_id,
            kind=record.kind,
            content=record.content,
            created_at=record.created_at,
            updated_at=record.updated_at,
            currency=Currency.of(record),
            source_ids=[str(record.id), *record.source_ids],
            version=version,
            metadata=record.metadata,
        ),
    )


def episode_point(
    episode: Episode,
    vector: Sequence[float],
    version: ModelVersion,
    *,
    text: str | None = None,
    terms: SparseVector | None = None,
) -> VectorPoint:
    """``text`` is what was embedded when it differs from the content (e.g. a neighbour window); ``terms``
    the episode's BM25 vector with its session neighbours folded in (core.consolidation.terms)."""
    return VectorPoint(
        id=point_id(episode.tenant_id, "episode", str(episode.id), version),
        vector=list(vector),
        sparse=terms,
        payload=payload(
            tenant_id=episode.tenant_id,
            record_type="episode",
            record_id=str(episode.id),
            agent_id=episode.agent_id,
            session_id=episode.session_id,
            kind=episode.kind,
            role=episode.role.value,
            content=episode.content if text is None else text,
            created_at=episode.created_at,
            currency=Currency.of(episode),
            source_ids=[str(episode.id)],
            version=version,
            metadata=episode.metadata,
        ),
    )


def chunk_point_id(tenant_id: str, record_id: str, index: int, version: ModelVersion) -> uuid.UUID:
    return deterministic_id(tenant_id, "chunk", f"{record_id}#{index}", version.key)


def episode_chunks(content: str) -> list[str]:
    """The extra texts embedded for a long episode (sentence windows; [] for a short one)."""
    return chunk_texts(content)


def episode_chunk_points(
    episode: Episode, vectors: Sequence[Sequence[float]], version: ModelVersion
) -> list[VectorPoint]:
    """One more point per chunk of a long episode: ``record_type`` "chunk", ``parent_type`` "episode", and
    the episode's record id, source ids and content, so that a search scores the episode by its best point
    and deleting the episode (by source) removes its chunks too."""
    base = episode_point(episode, [], version).payload
    return [
        VectorPoint(
            id=chunk_point_id(episode.tenant_id, str(episode.id), i, version),
            vector=list(vector),
            payload={**base, "record_type": "chunk", "parent_type": "episode", "chunk": i},
        )
        for i, vector in enumerate(vectors)
    ]


def chunk_points_of(
    episodes: Sequence[Episode],
    chunks: Sequence[Sequence[str]],
    vectors: Sequence[Sequence[float]],
    version: ModelVersion,
) -> list[VectorPoint]:
    """Chunk points of ``episodes``: ``chunks[i]`` are episode i's chunk texts, ``vectors`` their vectors
    in the same order, all episodes one after another."""
    out: list[VectorPoint] = []
    at = 0
    for episode, texts in zip(episodes, chunks, strict=True):
        out += episode_chunk_points(episode, vectors[at : at + len(texts)], version)
        at += len(texts)
    return out


def episode_point_ids(
    tenant_id: str, episode_id: str, content: str, version: ModelVersion
) -> list[uuid.UUID]:
    """Every point id an episode can have in ``version``'s collection: its own and its chunks'."""
    own = point_id(tenant_id, "episode", episode_id, version)
    chunks = len(episode_chunks(content))
    return [own, *(chunk_point_id(tenant_id, episode_id, i, version) for i in range(chunks))]
