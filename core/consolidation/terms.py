"""BM25 term vectors of episodes with their session neighbours folded in (core.retrieval.bm25_sparse).

A turn's vector depends on the turns around it, so consolidating a batch also changes the vectors of
the ``window`` turns on either side of it that were consolidated before: :func:`session_terms` returns
both, and the caller rewrites the latter in place (``VectorIndex.update_terms``).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from core.consolidation.queries import ContextTurn
from core.models import SparseVector
from core.retrieval.bm25_sparse import Bm25Sparse, folded_window


@dataclass
class SessionTerms:
    """Vectors of the episodes being written, and of the earlier turns whose neighbourhood changed."""

    own: dict[uuid.UUID, SparseVector | None] = field(default_factory=dict)
    changed: dict[uuid.UUID, SparseVector | None] = field(default_factory=dict)


def session_terms(
    sessions: Sequence[Sequence[ContextTurn]],
    targets: Collection[uuid.UUID],
    *,
    encoder: Bm25Sparse,
    window: int,
) -> SessionTerms:
    """For each session's turns in order: the folded vectors of the ``targets`` among them, and of every
    other turn within ``window`` of one (the turns given must reach ``2 * window`` past the targets, so
    that those neighbours' own neighbourhoods are complete)."""
    out = SessionTerms()
    for turns in sessions:
        at = [i for i, t in enumerate(turns) if t.id in targets]
        if not at:
            continue
        counts = [encoder.counts(t.content) for t in turns]
        near = sorted({j for i in at for j in range(i - window, i + window + 1) if 0 <= j < len(turns)})
        for j in near:
            vector = encoder.folded(counts[j], folded_window(counts, j, window))
            (out.own if turns[j].id in targets else out.changed)[turns[j].id] = vector
    return out
