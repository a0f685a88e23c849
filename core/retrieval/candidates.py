"""Candidates from each tier under one key, so that the same episode found by two tiers fuses into one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.models import Episode, MemoryRecord, ScoredSnippet, Tier, VectorHit
from core.stores.vector_filters import SUPERSEDED_FIELD, VALID_FROM_FIELD, VALID_TO_FIELD

# Snippet field ← payload field (core.points.Currency)
_CURRENCY_FIELDS = (
    ("valid_from", VALID_FROM_FIELD),
    ("valid_to", VALID_TO_FIELD),
    ("superseded_at", SUPERSEDED_FIELD),
)
# Tier that a merged candidate is shown under when several found it (durable record first).
_TIER_PRECEDENCE = {Tier.EPISODIC: 0, Tier.WORKING: 1, Tier.SEMANTIC: 2}


def episode_key(episode_id: str) -> str:
    return f"episode:{episode_id}"


@dataclass
class Candidate:
    """One retrievable item with the raw score and rank each tier gave it."""

    key: str
    tier: Tier
    content: str
    raw_score: float
    rank: int
    scores: dict[str, float] = field(default_factory=dict)
    source_ids: list[str] = field(default_factory=list)
    kind: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None  # memories only
    # ScoredSnippet's valid_from / valid_to / superseded_by / superseded_at, those that are set
    currency: dict[str, Any] = field(default_factory=dict)

    @property
    def created_ts(self) -> float | None:
        if self.created_at is None:
            return None
        ts = self.created_at if self.created_at.tzinfo else self.created_at.replace(tzinfo=UTC)
        return ts.timestamp()

    def merge(self, other: Candidate) -> Candidate:
        """Combine two tiers' views of the same item: per-tier scores add up; the durable text wins."""
        first, second = sorted((self, other), key=lambda c: _TIER_PRECEDENCE.get(c.tier, 9))
        scores: dict[str, float] = {}
        for cand in (first, second):
            for name, value in cand.scores.items():
                scores[name] = max(value, scores.get(name, value))
        return Candidate(
            key=first.key, tier=first.tier, content=first.content, raw_score=first.raw_score, rank=first.rank,
            scores=scores, source_ids=first.source_ids or second.source_ids, kind=first.kind or second.kind,
            agent_id=first.agent_id or second.agent_id, session_id=first.session_id or second.session_id,
            created_at=first.created_at or second.created_at, metadata={**second.metadata, **first.metadata},
            updated_at=first.updated_at or second.updated_at, currency=first.currency or second.currency,
        )  # fmt: skip

    def to_snippet(self, fused: float) -> ScoredSnippet:
        return ScoredSnippet(
            tier=self.tier, content=self.content, score=fused, scores={**self.scores, "fused": fused},
            source_ids=self.source_ids, kind=self.kind, agent_id=self.agent_id, session_id=self.session_id,
            created_at=self.created_at, updated_at=self.updated_at, metadata=self.metadata, **self.currency,
        )  # fmt: skip


def from_episode(episode: Episode, *, tier: Tier, raw_score: float, rank: int) -> Candidate:
    return Candidate(
        key=episode_key(str(episode.id)), tier=tier, content=episode.content, raw_score=raw_score, rank=rank,
        scores={tier.value: raw_score}, source_ids=[str(episode.id)], kind=episode.kind,
        agent_id=episode.agent_id, session_id=episode.session_id, created_at=episode.created_at,
        metadata=dict(episode.metadata) | {"role": episode.role.value}, currency=_currency(episode),
    )  # fmt: skip


def from_memory(record: MemoryRecord, *, raw_score: float, rank: int) -> Candidate:
    """A semantic-memory record found lexically; shares its key with the record's vector point."""
    return Candidate(
        key=f"memory:{record.id}", tier=Tier.EPISODIC, content=record.content, raw_score=raw_score, rank=rank,
        scores={Tier.EPISODIC.value: raw_score}, source_ids=[str(record.id), *record.source_ids],
        kind=record.kind, agent_id=record.agent_id, session_id=record.session_id,
        created_at=record.created_at, metadata=dict(record.metadata) | {"record_type": "memory"},
        updated_at=record.updated_at, currency=_currency(record),
    )  # fmt: skip


def _currency(record: Episode | MemoryRecord) -> dict[str, Any]:
    fields = {
        "valid_from": getattr(record, "valid_from", None),
        "valid_to": getattr(record, "valid_to", None),
        "superseded_by": None if record.superseded_by is None else str(record.superseded_by),
        "superseded_at": record.superseded_at,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _payload_currency(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in _CURRENCY_FIELDS:
        ts = payload.get(key)
        if isinstance(ts, int | float):
            out[name] = datetime.fromtimestamp(float(ts), tz=UTC)
    if payload.get("superseded_by"):
        out["superseded_by"] = str(payload["superseded_by"])
    return out


def _updated(payload: dict[str, Any]) -> datetime | None:
    ts = payload.get("updated_ts")
    return datetime.fromtimestamp(float(ts), tz=UTC) if isinstance(ts, int | float) else None


def _created(payload: dict[str, Any]) -> datetime | None:
    ts = payload.get("created_ts")
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(float(ts), tz=UTC)
    raw = payload.get("created_at")
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def from_vector_hit(hit: VectorHit, *, rank: int, tier: Tier = Tier.SEMANTIC) -> Candidate:
    """A semantic-tier point; an episode point shares its key with the same episode's lexical hit.

    A chunk point (one more point of a long record) stands for its parent record: same key and content.
    ``tier`` is the list it was found in: ``episodic`` for a BM25 match in the engine.
    """
    payload = hit.payload
    record_type = str(payload.get("record_type") or payload.get("kind") or "memory")
    if record_type == "chunk":
        record_type = str(payload.get("parent_type") or "episode")
    record_id = str(payload.get("record_id") or hit.id)
    key = episode_key(record_id) if record_type == "episode" else f"{record_type}:{record_id}"
    source_ids = [str(s) for s in payload.get("source_ids") or [record_id]]
    metadata = dict(payload.get("metadata") or {}) | {"record_type": record_type, "point_id": hit.id}
    if payload.get("role"):
        metadata["role"] = payload["role"]
    return Candidate(
        key=key, tier=tier, content=str(payload.get("content", "")), raw_score=hit.score, rank=rank,
        scores={tier.value: hit.score}, source_ids=source_ids, kind=payload.get("kind"),
        agent_id=payload.get("agent_id"), session_id=payload.get("session_id"), created_at=_created(payload),
        metadata=metadata, updated_at=_updated(payload), currency=_payload_currency(payload),
    )  # fmt: skip
