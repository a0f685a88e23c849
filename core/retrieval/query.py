"""What the read path is asked: one typed query per operation, built once at the edge.

The HTTP route converts its request model into a :class:`SearchQuery` or :class:`ContextQuery`; the query
then crosses the Serve handle as it is (frozen, slotted dataclasses pickle cheaply) and reaches
:class:`core.retrieval.hybrid.HybridRetriever` unchanged. ``None`` means "the service's default"
(``retrieval.default_k``, ``retrieval.default_token_budget``, ``retrieval.context_candidates``), so
settings take effect for every caller, HTTP included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from core.errors import InvalidInput
from core.models import Episode, JsonDict

Mode = Literal["hybrid", "vector", "lexical"]
MODES: tuple[str, ...] = ("hybrid", "vector", "lexical")
MetaValue = str | int | float | bool
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _aware(value: datetime | None) -> datetime | None:
    """Naive datetimes are read as UTC (the stores compare aware timestamps)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filters:
    """Restrictions every tier applies with the same meaning (all given conditions must hold).

    ``kinds``: any of these kinds; ``metadata``: equality on each (key, value) pair;
    ``created_after`` inclusive, ``created_before`` exclusive.

    Currency: by default only what is current is found (nothing superseded or expired, no memory whose
    validity starts later); ``as_of`` asks what was current at that time instead (and leaves out what did
    not exist yet); ``include_superseded`` drops the currency conditions (``as_of`` still bounds the start).
    """

    agent_id: str | None = None
    session_id: str | None = None
    kinds: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: tuple[tuple[str, MetaValue], ...] = ()
    as_of: datetime | None = None
    include_superseded: bool = False

    @classmethod
    def of(
        cls,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        kind: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        metadata: Mapping[str, MetaValue] | None = None,
        as_of: datetime | None = None,
        include_superseded: bool = False,
    ) -> Filters:
        """Filters from the shapes callers hold (one kind or several, metadata as a mapping)."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
        if any(not isinstance(k, str) or not k for k in kinds):
            raise InvalidInput("filters.kind", "kinds are non-empty strings")
        pairs = tuple(sorted((metadata or {}).items()))
        for key, value in pairs:
            if not isinstance(key, str) or not _META_KEY.fullmatch(key):
                raise InvalidInput(f"filters.metadata.{key}", "metadata keys are 1-64 of [A-Za-z0-9_-]")
            if not isinstance(value, str | int | float | bool):
                raise InvalidInput(f"filters.metadata.{key}", "a metadata filter value is a scalar")
        return cls(
            agent_id=agent_id,
            session_id=session_id,
            kinds=tuple(dict.fromkeys(kinds)),
            created_after=_aware(created_after),
            created_before=_aware(created_before),
            metadata=pairs,
            as_of=_aware(as_of),
            include_superseded=include_superseded,
        )

    def __bool__(self) -> bool:
        return any(
            (
                self.agent_id,
                self.session_id,
                self.kinds,
                self.created_after,
                self.created_before,
                self.metadata,
            )
        )

    def for_stores(self, **internal: Any) -> JsonDict:
        """The stores' filter language (core.stores.vector_filters, the Postgres searchers), plus any
        internal flags the retriever adds (``unconsolidated``)."""
        out: JsonDict = {}
        if self.agent_id is not None:
            out["agent_id"] = self.agent_id
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.kinds:
            out["kind"] = self.kinds[0] if len(self.kinds) == 1 else list(self.kinds)
        if self.created_after is not None:
            out["created_after"] = self.created_after
        if self.created_before is not None:
            out["created_before"] = self.created_before
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        at = self.as_of.timestamp() if self.as_of is not None else None
        if not self.include_superseded:
            out["current_at"] = at if at is not None else time.time()
        if at is not None:
            out["as_of"] = at
        out.update(internal)
        return out

    def matches(self, ep: Episode) -> bool:
        """The filters applied to an episode in memory (the session buffer), as the stores apply them."""
        if self.agent_id is not None and ep.agent_id != self.agent_id:
            return False
        if self.session_id is not None and ep.session_id != self.session_id:
            return False
        if self.kinds and ep.kind not in self.kinds:
            return False
        created = _aware(ep.created_at)
        if self.created_after is not None and (created is None or created < self.created_after):
            return False
        if self.created_before is not None and (created is None or created >= self.created_before):
            return False
        if self.as_of is not None and (created is None or created > self.as_of):
            return False
        superseded = None if self.include_superseded else ep.superseded_at
        if superseded is not None and superseded <= (self.as_of or datetime.now(UTC)):
            return False
        return all(ep.metadata.get(key) == value for key, value in self.metadata)


NO_FILTERS = Filters()


def _tiers(tiers: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if tiers is None else tuple(dict.fromkeys(str(t) for t in tiers))


def _check(text: str, mode: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("query", "must be a non-empty string")
    if mode not in MODES:
        raise InvalidInput("mode", f"unknown mode {mode!r}; expected one of {list(MODES)}")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """The ``k`` best snippets for ``text`` among the tenant's memories (``k`` None: ``default_k``);
    ``depth``: candidates each tier offers (None: ``candidate_k``, at least ``k``); ``diversify`` False:
    plain fused relevance order, near-duplicates kept, no MMR."""

    tenant_id: str
    text: str
    k: int | None = None
    mode: Mode = "hybrid"
    filters: Filters = NO_FILTERS
    tiers: tuple[str, ...] | None = None
    depth: int | None = None
    diversify: bool = True

    def __post_init__(self) -> None:
        _check(self.text, self.mode)
        object.__setattr__(self, "tiers", _tiers(self.tiers))


@dataclass(frozen=True, slots=True)
class ContextQuery:
    """The best context for ``text`` that fits ``token_budget`` tokens (None: ``default_token_budget``);
    packing considers the best ``candidates`` snippets (None: ``context_candidates``), each tier offering
    as many. ``tier_quotas``: (tier, max tokens) pairs; ``chronological`` orders the packed snippets by
    time; ``dedupe`` leaves out what the context holds already (core.retrieval.packing)."""

    tenant_id: str
    text: str
    token_budget: int | None = None
    mode: Mode = "hybrid"
    filters: Filters = NO_FILTERS
    tiers: tuple[str, ...] | None = None
    tier_quotas: tuple[tuple[str, int], ...] = field(default=())
    chronological: bool = True
    candidates: int | None = None
    dedupe: bool = True

    def __post_init__(self) -> None:
        _check(self.text, self.mode)
        object.__setattr__(self, "tiers", _tiers(self.tiers))
        quotas = self.tier_quotas
        if isinstance(quotas, Mapping):
            quotas = tuple(sorted((str(k), int(v)) for k, v in quotas.items()))
        object.__setattr__(self, "tier_quotas", tuple(quotas or ()))

    def quotas(self) -> dict[str, int] | None:
        return dict(self.tier_quotas) if self.tier_quotas else None
