"""Supersedes: a write (episode or memory) that declares which earlier records it replaces.

The relation is resolved before the write is stored (an id that names nothing of the tenant's is a 422
naming the field, so nothing half-applies), then recorded in Postgres, the source of truth
(``superseded_by`` / ``superseded_at`` on the replaced row; its earliest supersession stands), and
mirrored into the semantic tier (every point derived from the replaced record, summaries and memories
citing it included) and the session buffer (a replaced episode leaves it). Each step is idempotent, so
a client that retries a failed write converges.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.errors import InvalidInput, StoreUnavailable
from core.ids import deterministic_id
from core.ports import EpisodicStore, VectorIndex, WorkingStore

log = logging.getLogger(__name__)

RecordType = str  # "episode" | "memory"


@dataclass(frozen=True, slots=True)
class Link:
    """``target`` is superseded by ``by`` (a record of ``by_type``) from ``at``."""

    target: uuid.UUID
    target_type: RecordType
    by: uuid.UUID
    at: datetime


def _candidates(tenant_id: str, ref: str) -> list[tuple[uuid.UUID, RecordType | None]]:
    """What a reference may name: the record id itself, or the client key an episode or memory was
    written with (ids are derived from keys, core.ids.deterministic_id)."""
    out: list[tuple[uuid.UUID, RecordType | None]] = []
    with contextlib.suppress(ValueError):
        out.append((uuid.UUID(ref), None))
    out.append((deterministic_id(tenant_id, "episode", ref), "episode"))
    out.append((deterministic_id(tenant_id, "memory", ref), "memory"))
    return out


async def resolve(
    episodic: EpisodicStore,
    tenant_id: str,
    *,
    field: str,
    indexed: bool,
    kind: RecordType,
    ids: Sequence[uuid.UUID],
    refs: Sequence[Sequence[str] | None],
    times: Sequence[datetime],
) -> list[Link]:
    """The links a batch of writes declares: write ``i`` (a record of ``kind`` with id ``ids[i]``, from
    ``times[i]``) replaces what ``refs[i]`` names. A reference may name a record stored already or one
    of the batch. Errors name ``{field}[i].supersedes[j]`` (``indexed``) or ``{field}.supersedes[j]``."""
    wanted = [
        (f"{field}[{i}]" if indexed else field, by, list(r), at)
        for i, (by, r, at) in enumerate(zip(ids, refs, times, strict=True))
        if r
    ]
    if not wanted:
        return []
    candidates = {cid for _, _, rs, _ in wanted for ref in rs for cid, _ in _candidates(tenant_id, ref)}
    known: dict[uuid.UUID, RecordType] = dict(
        await episodic.find_records(tenant_id=tenant_id, ids=sorted(candidates, key=str))
    )
    known.update(dict.fromkeys(ids, kind))
    links: list[Link] = []
    for name_of, by, rs, at in wanted:
        for j, ref in enumerate(rs):
            name = f"{name_of}.supersedes[{j}]"
            found = [
                (cid, known[cid])
                for cid, ref_kind in _candidates(tenant_id, ref)
                if cid in known and (ref_kind is None or known[cid] == ref_kind)
            ]
            if not found:
                raise InvalidInput(name, f"no episode or memory {ref!r} in this tenant")
            target, target_type = found[0]
            if target == by:
                raise InvalidInput(name, "a write cannot supersede itself")
            links.append(Link(target, target_type, by, at))
    return links


async def apply(
    links: Sequence[Link],
    *,
    tenant_id: str,
    episodic: EpisodicStore,
    vectors: VectorIndex | None,
    working: WorkingStore,
) -> None:
    """Record the links in Postgres, then mark the semantic tier's points and drop replaced episodes from
    the session buffer. Every link is mirrored, applied now or earlier: a retry repairs a mirror that
    failed (a semantic-tier failure raises StoreUnavailable, so the write is not acknowledged)."""
    if not links:
        return
    await episodic.supersede(tenant_id=tenant_id, links=[(k.target, k.by, k.at) for k in links])
    if vectors is not None:
        marks = [(str(k.target), str(k.by), k.at.timestamp()) for k in links]
        await vectors.mark_superseded(tenant_id=tenant_id, marks=marks)
    episodes = [k.target for k in links if k.target_type == "episode"]
    if episodes:
        try:
            await working.remove_from_sessions(tenant_id=tenant_id, episode_ids=episodes)
        except StoreUnavailable:
            log.warning("buffer cleanup skipped: redis unavailable", extra={"store": "redis"})
