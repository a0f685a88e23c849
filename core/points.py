"""How records become semantic-tier points: deterministic ids and one payload shape for every writer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from core.ids import deterministic_id
from core.models import Episode, MemoryRecord, ModelVersion, VectorPoint

RecordType = Literal["episode", "summary", "memory"]


def point_id(tenant_id: str, record_type: RecordType, source_id: str, version: ModelVersion) -> uuid.UUID:
    """Same record + same model version → same point: replays and retries overwrite, never duplicate."""
    return deterministic_id(tenant_id, record_type, source_id, version.key)


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
) -> dict[str, Any]:
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
    }


def memory_point(record: MemoryRecord, vector: Sequence[float], version: ModelVersion) -> VectorPoint:
    return VectorPoint(
        id=point_id(record.tenant_id, "memory", str(record.id), version),
        vector=list(vector),
        payload=payload(
            tenant_id=record.tenant_id,
            record_type="memory",
            record_id=str(record.id),
            agent_id=record.agent_id,
            session_id=record.session_id,
            kind=record.kind,
            content=record.content,
            created_at=record.created_at,
            source_ids=[str(record.id), *record.source_ids],
            version=version,
            metadata=record.metadata,
        ),
    )


def episode_point(
    episode: Episode, vector: Sequence[float], version: ModelVersion, *, text: str | None = None
) -> VectorPoint:
    """``text`` is what was embedded when it differs from the content (e.g. a neighbour window)."""
    return VectorPoint(
        id=point_id(episode.tenant_id, "episode", str(episode.id), version),
        vector=list(vector),
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
            source_ids=[str(episode.id)],
            version=version,
            metadata=episode.metadata,
        ),
    )
