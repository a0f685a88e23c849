"""HybridRetriever: search the three tiers concurrently, fuse, diversify, and pack context to a budget.

Tiers: ``semantic`` (vector index, query embedded by the embedder), ``episodic`` (lexical search over
durable episodes), ``working`` (the session buffer, when a ``session_id`` filter is given; its scores
count only when the episodic tier did not answer, see :func:`core.retrieval.ranking.scoring_outcomes`).
A tier that fails with StoreUnavailable, an embedding error or a timeout is reported in ``degraded``;
the request still succeeds with the other tiers.

With ``terms`` (engine lexical search) and a collection that holds BM25 vectors, the semantic and the
lexical lists come from ONE engine call (core.retrieval.engine_search); Postgres then answers only for
episodes not consolidated yet (``fresh``, a bounded query), merged into the lexical list by BM25 score.
Should the engine fail, lexical search falls back to Postgres over every episode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

from core.embedding.types import TextEmbedder
from core.errors import EmbeddingError, InvalidInput, StoreUnavailable
from core.metrics import METRICS
from core.models import Episode, MemoryRecord, Tier, VectorHit
from core.ports import VectorIndex, WorkingStore
from core.retrieval.bm25_sparse import Bm25Sparse
from core.retrieval.candidates import Candidate, episode_key, episode_matches, from_episode, from_memory
from core.retrieval.engine_search import best_per_record, engine_candidates, merge_by_score
from core.retrieval.packing import pack_context
from core.retrieval.quality import lexical_query, working_scores
from core.retrieval.ranking import TierOutcome, fuse_and_diversify, score_stats
from core.retrieval.results import ContextResult, LexicalSearcher, MemoryLexicalSearcher, SearchResult
from core.retrieval.tokens import TokenCounter
from core.settings import RetrievalSettings

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "vector", "lexical"]
TIERS: tuple[str, ...] = (Tier.SEMANTIC.value, Tier.EPISODIC.value, Tier.WORKING.value)
_VERSION_TTL_S = 30.0
# Points fetched per wanted record from the vector tier (a long record also has chunk points).
_CHUNK_OVERFETCH = 2


class HybridRetriever:
    """Hybrid search and context assembly over borrowed tier clients (it never closes them)."""

    def __init__(
        self,
        *,
        working: WorkingStore,
        lexical: LexicalSearcher,
        vectors: VectorIndex,
        embedder: TextEmbedder,
        settings: RetrievalSettings,
        token_counter: TokenCounter,
        terms: Bm25Sparse | None = None,
        fresh: LexicalSearcher | None = None,
    ) -> None:
        self._working = working
        self._lexical = lexical
        self._vectors = vectors
        self._embedder = embedder
        self._settings = settings
        self._counter = token_counter
        self._terms = terms
        self._fresh = fresh
        self._engine: tuple[float, str | None, bool] | None = None  # (checked at, live version, lexical)

    async def search(
        self,
        *,
        tenant_id: str,
        query: str,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
        tiers: Sequence[str] | None = None,
        mode: Mode = "hybrid",
        depth: int | None = None,
    ) -> SearchResult:
        """The ``k`` best snippets for ``query`` over the requested tiers, fused and diversified; each tier
        offers ``depth`` candidates (default: ``candidate_k``, at least ``k``)."""
        k = k or self._settings.default_k
        active = self._active_tiers(tiers, mode, filters)
        depth = max(k, depth or self._settings.candidate_k)
        in_engine = [t for t in active if t in (Tier.SEMANTIC.value, Tier.EPISODIC.value)]
        if in_engine and await self._engine_is_lexical():
            rest = [t for t in active if t not in in_engine]
            groups = await asyncio.gather(
                self._run_engine(in_engine, tenant_id=tenant_id, query=query, depth=depth, filters=filters),
                *(
                    self._tier_list(n, tenant_id=tenant_id, query=query, depth=depth, filters=filters)
                    for n in rest
                ),
            )
            outcomes = [o for group in groups for o in group]
        else:
            outcomes = list(
                await asyncio.gather(
                    *(
                        self._run_tier(name, tenant_id=tenant_id, query=query, depth=depth, filters=filters)
                        for name in active
                    )
                )
            )
        degraded = [o.name for o in outcomes if o.failed or o.partial]
        ranked = fuse_and_diversify([o for o in outcomes if not o.failed], settings=self._settings, k=k)
        tier_top = {o.name: max(c.raw_score for c in o.candidates) for o in outcomes if o.candidates}
        top, spread = score_stats([s.score for s in ranked])
        return SearchResult(
            snippets=ranked, degraded=degraded, mode=mode, top_score=top, score_spread=spread,
            tier_top_scores=tier_top,
        )  # fmt: skip

    async def context(
        self,
        *,
        tenant_id: str,
        query: str,
        token_budget: int | None = None,
        filters: dict[str, Any] | None = None,
        tier_quotas: dict[str, int] | None = None,
        chronological: bool = False,
        tiers: Sequence[str] | None = None,
        mode: Mode = "hybrid",
        candidates: int | None = None,
    ) -> ContextResult:
        """The best context for ``query`` that fits ``token_budget`` tokens, with sources; packing considers
        the best ``candidates`` (default ``candidate_k``) snippets, and each tier offers as many."""
        budget = token_budget or self._settings.default_token_budget
        candidates = candidates or self._settings.candidate_k
        if tier_quotas:
            unknown = set(tier_quotas) - set(TIERS)
            if unknown:
                raise InvalidInput("tier_quotas", f"unknown tiers {sorted(unknown)}; expected {list(TIERS)}")
        found = await self.search(
            tenant_id=tenant_id,
            query=query,
            k=candidates,
            filters=filters,
            tiers=tiers,
            mode=mode,
            depth=candidates,
        )
        packed = await asyncio.to_thread(
            pack_context, found.snippets, token_budget=budget, counter=self._counter,
            tier_quotas=tier_quotas, chronological=chronological,
        )  # fmt: skip
        return ContextResult(
            snippets=packed.snippets,
            context=packed.text,
            tokens_used=packed.tokens_used,
            token_budget=budget,
            degraded=found.degraded,
            top_score=found.top_score,
            score_spread=found.score_spread,
        )

    # -- tiers ------------------------------------------------------------------------------------

    def _active_tiers(
        self, tiers: Sequence[str] | None, mode: Mode, filters: dict[str, Any] | None
    ) -> list[str]:
        wanted = list(TIERS) if tiers is None else list(dict.fromkeys(tiers))
        unknown = [t for t in wanted if t not in TIERS]
        if unknown:
            raise InvalidInput("tiers", f"unknown tiers {unknown}; expected a subset of {list(TIERS)}")
        if mode == "vector":
            wanted = [t for t in wanted if t == Tier.SEMANTIC.value]
        elif mode == "lexical":
            wanted = [t for t in wanted if t == Tier.EPISODIC.value]
        elif mode != "hybrid":
            raise InvalidInput("mode", f"unknown mode {mode!r}")
        if not (filters or {}).get("session_id"):
            wanted = [t for t in wanted if t != Tier.WORKING.value]
        return wanted

    async def _run_tier(
        self, name: str, *, tenant_id: str, query: str, depth: int, filters: dict[str, Any] | None
    ) -> TierOutcome:
        try:
            with METRICS.retrieval_tier_seconds.timer(tier=name):
                async with asyncio.timeout(self._settings.tier_timeout_s):
                    if name == Tier.SEMANTIC.value:
                        found = await self._semantic(
                            tenant_id=tenant_id, query=query, depth=depth, filters=filters
                        )
                    elif name == Tier.EPISODIC.value:
                        found = await self._episodic(
                            tenant_id=tenant_id, query=query, depth=depth, filters=filters
                        )
                    else:
                        found = await self._recent(tenant_id=tenant_id, query=query, filters=filters or {})
        except (StoreUnavailable, EmbeddingError, TimeoutError) as exc:
            self._note_degraded(name, exc)
            return TierOutcome(name, failed=True)
        return TierOutcome(name, candidates=found)

    async def _tier_list(self, name: str, **kwargs: Any) -> list[TierOutcome]:
        return [await self._run_tier(name, **kwargs)]

    async def _run_engine(
        self, wanted: list[str], *, tenant_id: str, query: str, depth: int, filters: dict[str, Any] | None
    ) -> list[TierOutcome]:
        """The semantic and lexical tiers from one engine call, plus Postgres for unconsolidated episodes."""
        semantic, lexical = Tier.SEMANTIC.value, Tier.EPISODIC.value
        fresh = (
            asyncio.ensure_future(
                self._fresh_episodes(tenant_id=tenant_id, query=query, depth=depth, filters=filters)
            )
            if lexical in wanted
            else None
        )
        try:
            with METRICS.retrieval_tier_seconds.timer(tier=semantic):
                async with asyncio.timeout(self._settings.tier_timeout_s):
                    live = (await self._engine_state())[1] or ""
                    lists = await engine_candidates(
                        self._vectors, self._embedder if semantic in wanted else None,
                        self._terms if lexical in wanted else None,
                        live_version=live, tenant_id=tenant_id, query=query, depth=depth, filters=filters,
                    )  # fmt: skip
        except (StoreUnavailable, TimeoutError) as exc:
            # Lexical search does not need the engine: Postgres still scores every episode.
            if fresh is not None:
                fresh.cancel()
                await asyncio.gather(fresh, return_exceptions=True)
            self._note_degraded(semantic, exc)
            out = [TierOutcome(semantic, failed=True)] if semantic in wanted else []
            if lexical in wanted:
                out.append(
                    await self._run_tier(
                        lexical, tenant_id=tenant_id, query=query, depth=depth, filters=filters
                    )
                )
            return out
        except BaseException:
            if fresh is not None:
                fresh.cancel()
            raise
        out = []
        if semantic in wanted:
            if lists.dense_error is not None:
                self._note_degraded(semantic, lists.dense_error)
            out.append(TierOutcome(semantic, candidates=lists.dense, failed=lists.dense_error is not None))
        if fresh is not None:
            recent, answered = await fresh
            ranked = merge_by_score(recent, lists.lexical, depth=depth)
            out.append(TierOutcome(lexical, candidates=ranked, partial=not answered))
        return out

    async def _fresh_episodes(
        self, *, tenant_id: str, query: str, depth: int, filters: dict[str, Any] | None
    ) -> tuple[list[Candidate], bool]:
        """Acknowledged episodes the engine does not hold yet, by BM25 in Postgres; (found, answered)."""
        text = lexical_query(query)
        if self._fresh is None or not text:
            return [], True
        try:
            async with asyncio.timeout(self._settings.tier_timeout_s):
                found = await self._fresh.search_text(
                    tenant_id=tenant_id,
                    query=text,
                    k=depth,
                    filters={**(filters or {}), "unconsolidated": True},
                )
        except (StoreUnavailable, TimeoutError) as exc:
            self._note_degraded(Tier.EPISODIC.value, exc)
            return [], False
        return [
            from_episode(ep, tier=Tier.EPISODIC, raw_score=s, rank=i) for i, (ep, s) in enumerate(found)
        ], True

    @staticmethod
    def _note_degraded(tier: str, exc: BaseException) -> None:
        logger.warning("retrieval tier degraded", extra={"tier": tier, "error": type(exc).__name__})
        METRICS.retrieval_tier_degraded_total.inc(tier=tier)

    async def _engine_state(self) -> tuple[float, str | None, bool]:
        """(checked at, the live collection's model version, whether it holds BM25 vectors), re-read
        every ``_VERSION_TTL_S``."""
        now = time.monotonic()
        if self._engine is None or now - self._engine[0] > _VERSION_TTL_S:
            live = await self._vectors.live_version()
            lexical = live is not None and self._terms is not None and await self._vectors.lexical_ready()
            if live is not None and self._terms is not None and not lexical and self._engine is None:
                logger.warning(
                    "the live collection (%s) holds no BM25 vectors (made before lexical search moved into "
                    "the engine): lexical search runs in Postgres over every episode",
                    live,
                )
            self._engine = (now, live, lexical)
        return self._engine

    async def _engine_is_lexical(self) -> bool:
        if self._terms is None:
            return False
        try:
            return (await self._engine_state())[2]
        except (StoreUnavailable, TimeoutError):
            return False  # the tiers run one by one, and report what is down

    async def _semantic(
        self, *, tenant_id: str, query: str, depth: int, filters: dict[str, Any] | None
    ) -> list[Candidate]:
        live = (await self._engine_state())[1]
        if live is None:
            return []  # nothing consolidated yet
        embedded = await self._embedder.embed([query])
        if embedded.version.key != live:
            raise EmbeddingError(f"query model {embedded.version.key} differs from the collection's {live}")
        # Long records also have chunk points: keep each record's best point, and when that leaves fewer
        # than ``depth`` records, ask once more for more points (only tenants with chunks pay for it).
        k = depth
        while True:
            hits: list[VectorHit] = await self._vectors.search(
                embedded.vectors[0], tenant_id=tenant_id, k=k, filters=filters
            )
            found = best_per_record(hits, tier=Tier.SEMANTIC, depth=depth)
            if len(found) == depth or len(hits) < k or k > depth:
                return found
            k = depth * _CHUNK_OVERFETCH

    async def _episodic(
        self, *, tenant_id: str, query: str, depth: int, filters: dict[str, Any] | None
    ) -> list[Candidate]:
        text = lexical_query(query)
        if not text:
            return []
        episodes = self._lexical.search_text(tenant_id=tenant_id, query=text, k=depth, filters=filters)
        memories_fn = getattr(self._lexical, "search_memories_text", None)
        if not (self._settings.lexical_memories and callable(memories_fn)):
            found = await episodes
            return [
                from_episode(ep, tier=Tier.EPISODIC, raw_score=score, rank=i)
                for i, (ep, score) in enumerate(found)
            ]
        searcher: MemoryLexicalSearcher = self._lexical  # type: ignore[assignment]
        found, memories = await asyncio.gather(
            episodes, searcher.search_memories_text(tenant_id=tenant_id, query=text, k=depth, filters=filters)
        )
        # Both lists are BM25 scores of the same query, so one ranking by score is fair.
        merged: list[tuple[float, Episode | MemoryRecord]] = [(s, e) for e, s in found] + [
            (s, m) for m, s in memories
        ]
        merged.sort(key=lambda pair: -pair[0])
        return [
            from_episode(item, tier=Tier.EPISODIC, raw_score=score, rank=i)
            if isinstance(item, Episode)
            else from_memory(item, raw_score=score, rank=i)
            for i, (score, item) in enumerate(merged[:depth])
        ]

    async def _recent(self, *, tenant_id: str, query: str, filters: dict[str, Any]) -> list[Candidate]:
        limit = max(self._settings.candidate_k, self._settings.working_recent_n)
        recent = await self._working.recent_session(
            tenant_id=tenant_id, session_id=str(filters["session_id"]), limit=limit
        )
        recent = [e for e in recent if episode_matches(e, filters)]
        scored = working_scores(query, recent, always_newest=self._settings.working_recent_n)
        return [from_episode(ep, tier=Tier.WORKING, raw_score=s, rank=i) for i, (ep, s) in enumerate(scored)]


__all__ = [
    "ContextResult",
    "HybridRetriever",
    "LexicalSearcher",
    "SearchResult",
    "episode_key",
    "episode_matches",
]
