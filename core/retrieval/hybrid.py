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
from typing import Any

from core.embedding.types import TextEmbedder
from core.errors import EmbeddingError, InvalidInput, StoreUnavailable
from core.metrics import METRICS, observe_retrieval
from core.models import Episode, JsonDict, MemoryRecord, Tier, VectorHit
from core.ports import VectorIndex, WorkingStore
from core.retrieval.bm25_sparse import Bm25Sparse
from core.retrieval.candidates import Candidate, episode_key, from_episode, from_memory
from core.retrieval.engine_search import best_per_record, engine_candidates, merge_by_score
from core.retrieval.packing import pack_context
from core.retrieval.quality import lexical_query, working_scores
from core.retrieval.query import NO_FILTERS, ContextQuery, Filters, SearchQuery
from core.retrieval.ranking import TierOutcome, fuse_and_diversify, score_stats
from core.retrieval.results import ContextResult, LexicalSearcher, MemoryLexicalSearcher, SearchResult
from core.retrieval.tokens import TokenCounter
from core.settings import RetrievalSettings

logger = logging.getLogger(__name__)

TIERS: tuple[str, ...] = (Tier.SEMANTIC.value, Tier.EPISODIC.value, Tier.WORKING.value)
_VERSION_TTL_S = 30.0
# While no collection exists yet, look again this often: the first consolidation creates one, and the
# semantic tier must answer from then on, not half a minute later.
_NO_COLLECTION_TTL_S = 1.0
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

    async def search(self, query: SearchQuery) -> SearchResult:
        """The ``k`` best snippets for the query over the requested tiers, fused and diversified."""
        with METRICS.retrieval_seconds.timer(endpoint="search"):
            result = await self._search(query, k=query.k or self._settings.default_k, depth=query.depth)
        observe_retrieval("search", result.snippets)
        return result

    async def context(self, query: ContextQuery) -> ContextResult:
        """The best context for the query that fits its token budget, with sources."""
        with METRICS.retrieval_seconds.timer(endpoint="context"):
            result = await self._context(query)
        observe_retrieval(
            "context", result.snippets, tokens_used=result.tokens_used, token_budget=result.token_budget
        )
        return result

    async def _search(self, query: SearchQuery | ContextQuery, *, k: int, depth: int | None) -> SearchResult:
        tenant_id, text, filters = query.tenant_id, query.text, query.filters.for_stores()
        active = self._active_tiers(query.tiers, query.mode, query.filters)
        depth = max(k, depth or self._settings.candidate_k)
        in_engine = [t for t in active if t in (Tier.SEMANTIC.value, Tier.EPISODIC.value)]
        if in_engine and await self._engine_is_lexical():
            rest = [t for t in active if t not in in_engine]
            groups = await asyncio.gather(
                self._run_engine(in_engine, tenant_id=tenant_id, query=text, depth=depth, filters=filters),
                *(
                    self._tier_list(
                        n, tenant_id=tenant_id, query=text, depth=depth, filters=filters, typed=query.filters
                    )
                    for n in rest
                ),
            )
            outcomes = [o for group in groups for o in group]
        else:
            outcomes = list(
                await asyncio.gather(
                    *(
                        self._run_tier(
                            name,
                            tenant_id=tenant_id,
                            query=text,
                            depth=depth,
                            filters=filters,
                            typed=query.filters,
                        )
                        for name in active
                    )
                )
            )
        degraded = [o.name for o in outcomes if o.failed or o.partial]
        diversify = not isinstance(query, SearchQuery) or query.diversify
        ranked = fuse_and_diversify(
            [o for o in outcomes if not o.failed], settings=self._settings, k=k, diversify=diversify
        )
        top, spread = score_stats([s.score for s in ranked])
        semantic = next((o for o in outcomes if o.name == Tier.SEMANTIC.value and not o.failed), None)
        version = self._engine[1] if semantic is not None and self._engine is not None else None
        return SearchResult(
            snippets=ranked, degraded=degraded, top_score=top, score_spread=spread, model_version=version
        )

    async def _context(self, query: ContextQuery) -> ContextResult:
        budget = query.token_budget or self._settings.default_token_budget
        candidates = query.candidates or self._settings.context_candidates
        quotas = query.quotas()
        if quotas:
            unknown = set(quotas) - set(TIERS)
            if unknown:
                raise InvalidInput("tier_quotas", f"unknown tiers {sorted(unknown)}; expected {list(TIERS)}")
        found = await self._search(query, k=candidates, depth=candidates)
        packed = await asyncio.to_thread(
            pack_context, found.snippets, token_budget=budget, counter=self._counter,
            tier_quotas=quotas, chronological=query.chronological, query=query.text, dedupe=query.dedupe,
        )  # fmt: skip
        return ContextResult(
            snippets=packed.snippets,
            context=packed.text,
            tokens_used=packed.tokens_used,
            token_budget=budget,
            degraded=found.degraded,
            top_score=found.top_score,
            score_spread=found.score_spread,
            model_version=found.model_version,
        )

    # -- tiers ------------------------------------------------------------------------------------

    def _active_tiers(self, tiers: Sequence[str] | None, mode: str, filters: Filters) -> list[str]:
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
        if not filters.session_id:
            wanted = [t for t in wanted if t != Tier.WORKING.value]
        return wanted

    async def _run_tier(
        self, name: str, *, tenant_id: str, query: str, depth: int, filters: JsonDict, typed: Filters
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
                        found = await self._recent(tenant_id=tenant_id, query=query, filters=typed)
        except (StoreUnavailable, EmbeddingError, TimeoutError) as exc:
            self._note_degraded(name, exc)
            return TierOutcome(name, failed=True)
        return TierOutcome(name, candidates=found)

    async def _tier_list(self, name: str, **kwargs: Any) -> list[TierOutcome]:
        return [await self._run_tier(name, **kwargs)]

    async def _run_engine(
        self, wanted: list[str], *, tenant_id: str, query: str, depth: int, filters: JsonDict
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
                        lexical,
                        tenant_id=tenant_id,
                        query=query,
                        depth=depth,
                        filters=filters,
                        typed=NO_FILTERS,
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
        self, *, tenant_id: str, query: str, depth: int, filters: JsonDict
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
                    filters={**filters, "unconsolidated": True},
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
        ttl = (
            _VERSION_TTL_S
            if self._engine is not None and self._engine[1] is not None
            else _NO_COLLECTION_TTL_S
        )
        if self._engine is None or now - self._engine[0] > ttl:
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
        self, *, tenant_id: str, query: str, depth: int, filters: JsonDict
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
        self, *, tenant_id: str, query: str, depth: int, filters: JsonDict
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

    async def _recent(self, *, tenant_id: str, query: str, filters: Filters) -> list[Candidate]:
        limit = max(self._settings.candidate_k, self._settings.working_recent_n)
        recent = await self._working.recent_session(
            tenant_id=tenant_id, session_id=str(filters.session_id), limit=limit
        )
        recent = [e for e in recent if filters.matches(e)]
        scored = working_scores(query, recent, always_newest=self._settings.working_recent_n)
        return [from_episode(ep, tier=Tier.WORKING, raw_score=s, rank=i) for i, (ep, s) in enumerate(scored)]


__all__ = [
    "ContextQuery",
    "ContextResult",
    "Filters",
    "HybridRetriever",
    "LexicalSearcher",
    "SearchQuery",
    "SearchResult",
    "episode_key",
]
