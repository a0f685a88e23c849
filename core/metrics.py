"""Every hybridmem metric, declared once, published through a swappable backend.

Each metric is one :class:`MetricSpec` (name, kind, help, label names, buckets) held by a typed handle in
:data:`METRICS`. Handles bind to the process's backend on first use, never at import: outside Ray the
backend is prometheus-client on a private registry (:func:`render_latest` serves ``GET /metrics``); inside
Ray processes ``deployments.metrics_backend.install_ray_metrics()`` swaps in ``ray.serve.metrics`` so
values from every replica and job worker aggregate on Ray's Prometheus endpoint (exported there with a
``ray_`` prefix: ``hybridmem_x_total`` → ``ray_hybridmem_x_total``).

Labels are bounded by design: never a tenant, session, agent or record id. ``partition`` is allowed on
the backlog gauge only (at most ``consolidation.n_partitions`` series).

    METRICS.ingest_records_total.inc(3, store="postgres", operation="insert_episodes")
    with METRICS.retrieval_seconds.timer(endpoint="search"):
        ...
    with store_operation("redis", "append_session", records=len(turns)):
        ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import EmbeddingError, HybridMemError, StoreUnavailable
from core.metric_types import (
    CONTENT_TYPE,
    FORBIDDEN_LABELS,
    PARTITION_LABEL_ALLOWED,
    PREFIX,
    RAY_EXPORT_PREFIX,
    Counter,
    Gauge,
    Histogram,
    Instrument,
    MetricKind,
    MetricsBackend,
    MetricSpec,
    PrometheusBackend,
    _Metric,
    current_backend,
    local_backend,
    render_latest,
    use_backend,
)
from core.models import ScoredSnippet

__all__ = [
    "CONTENT_TYPE",
    "FORBIDDEN_LABELS",
    "METRICS",
    "PARTITION_LABEL_ALLOWED",
    "PREFIX",
    "RAY_EXPORT_PREFIX",
    "Counter",
    "Gauge",
    "Histogram",
    "Instrument",
    "MetricKind",
    "MetricSpec",
    "Metrics",
    "MetricsBackend",
    "OperationStats",
    "PrometheusBackend",
    "current_backend",
    "failure_stage",
    "local_backend",
    "observe_consolidation_run",
    "observe_http",
    "observe_partition",
    "observe_retrieval",
    "refresh_backlog",
    "render_latest",
    "store_operation",
    "use_backend",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# Ray histograms need strictly positive boundaries: scores <= 0.05 land in the first bucket.
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
TOKEN_BUCKETS = (16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05)
COUNT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


class Metrics:
    """The catalogue: every metric hybridmem publishes (label values: docs/observability.md)."""

    def __init__(self) -> None:
        # --- ingest and stores (store: redis | postgres | qdrant) ---
        self.ingest_records_total = Counter(
            "hybridmem_ingest_records_total",
            "Records written, per store and operation (episodes, turns, scratchpads, memories, points)",
            ("store", "operation"),
        )
        self.store_operation_seconds = Histogram(
            "hybridmem_store_operation_seconds",
            "Latency of one store call, per store, operation and outcome (ok | error | cancelled)",
            ("store", "operation", "outcome"),
            LATENCY_BUCKETS,
        )
        self.store_errors_total = Counter(
            "hybridmem_store_errors_total",
            "Failed store calls (unreachable, timed out, refused), per store and operation",
            ("store", "operation"),
        )
        self.store_up = Gauge(
            "hybridmem_store_up", "1 when the last health probe of the store succeeded, else 0", ("store",)
        )
        # --- HTTP ingress (route: the route template, never a raw path) ---
        self.http_requests_total = Counter(
            "hybridmem_http_requests_total",
            "HTTP requests handled by the ingress, per route template, method and status code",
            ("route", "method", "status"),
        )
        self.http_request_seconds = Histogram(
            "hybridmem_http_request_seconds",
            "HTTP request latency at the ingress, per route template and method",
            ("route", "method"),
            LATENCY_BUCKETS,
        )
        # --- embedding (backend: torch | onnx | ollama) ---
        self.embedding_batch_size = Histogram(
            "hybridmem_embedding_batch_size", "Texts in one model call", ("backend",), BATCH_BUCKETS
        )
        self.embedding_seconds = Histogram(
            "hybridmem_embedding_seconds",
            "Latency of one model call (a whole batch)",
            ("backend",),
            LATENCY_BUCKETS,
        )
        self.embedding_texts_total = Counter(
            "hybridmem_embedding_texts_total", "Texts embedded by the model (cache misses only)", ("backend",)
        )
        self.embedding_queue_depth = Gauge(
            "hybridmem_embedding_queue_depth", "Texts queued or being embedded in this embedder replica"
        )
        self.embedding_truncations_total = Counter(
            "hybridmem_embedding_truncations_total", "Texts longer than the model's window, truncated"
        )
        self.embedding_errors_total = Counter(
            "hybridmem_embedding_errors_total", "Failed model calls", ("backend",)
        )
        self.embedding_cache_hits_total = Counter(
            "hybridmem_embedding_cache_hits_total", "Embedding cache lookups answered from Redis"
        )
        self.embedding_cache_misses_total = Counter(
            "hybridmem_embedding_cache_misses_total", "Embedding cache lookups that needed the model"
        )
        # --- retrieval (tier: working | episodic | semantic; endpoint: search | context) ---
        self.retrieval_seconds = Histogram(
            "hybridmem_retrieval_seconds",
            "End-to-end retrieval latency, per API endpoint (search | context)",
            ("endpoint",),
            LATENCY_BUCKETS,
        )
        self.retrieval_tier_seconds = Histogram(
            "hybridmem_retrieval_tier_seconds",
            "Latency of one tier's candidate fetch (the semantic tier includes embedding the query)",
            ("tier",),
            LATENCY_BUCKETS,
        )
        self.retrieval_tier_degraded_total = Counter(
            "hybridmem_retrieval_tier_degraded_total",
            "Retrievals answered without a tier (it failed or exceeded retrieval.tier_timeout_s)",
            ("tier",),
        )
        self.retrieval_results = Histogram(
            "hybridmem_retrieval_results", "Snippets returned by one retrieval", ("endpoint",), COUNT_BUCKETS
        )
        self.retrieval_top_score = Histogram(
            "hybridmem_retrieval_top_score",
            "Best semantic similarity (cosine) among the returned snippets",
            ("endpoint",),
            SCORE_BUCKETS,
        )
        self.retrieval_score_spread = Histogram(
            "hybridmem_retrieval_score_spread",
            "Best minus worst semantic similarity among the returned snippets",
            ("endpoint",),
            SCORE_BUCKETS,
        )
        self.context_tokens_used = Histogram(
            "hybridmem_context_tokens_used", "Tokens packed into one context response", (), TOKEN_BUCKETS
        )
        self.context_budget_ratio = Histogram(
            "hybridmem_context_budget_ratio",
            "Tokens used / token budget of one context response",
            (),
            RATIO_BUCKETS,
        )
        # --- consolidation and retention ---
        self.consolidation_run_seconds = Histogram(
            "hybridmem_consolidation_run_seconds",
            "Duration of one consolidation run (all its partitions), per outcome (succeeded | failed)",
            ("outcome",),
            JOB_BUCKETS,
        )
        self.consolidation_partition_seconds = Histogram(
            "hybridmem_consolidation_partition_seconds",
            "Duration of consolidating one partition, per outcome (done | locked | failed)",
            ("outcome",),
            JOB_BUCKETS,
        )
        self.consolidation_runs_total = Counter(
            "hybridmem_consolidation_runs_total",
            "Consolidation runs finished, per outcome (succeeded | failed)",
            ("outcome",),
        )
        self.consolidation_episodes_total = Counter(
            "hybridmem_consolidation_episodes_total",
            "Episodes consolidated (embedded, indexed, checkpointed)",
        )
        self.consolidation_records_total = Counter(
            "hybridmem_consolidation_records_total",
            "Records produced by consolidation, per record_type (episode | summary | memory)",
            ("record_type",),
        )
        self.consolidation_failures_total = Counter(
            "hybridmem_consolidation_failures_total",
            "Failed partition steps, per stage (drain | summarise | embed | upsert | checkpoint | other)",
            ("stage",),
        )
        self.consolidation_backlog_episodes = Gauge(
            "hybridmem_consolidation_backlog_episodes",
            "Unconsolidated episodes, per partition (set when a partition is processed or measured)",
            ("partition",),
        )
        self.consolidation_last_success_timestamp_seconds = Gauge(
            "hybridmem_consolidation_last_success_timestamp_seconds",
            "Unix time of the last consolidation run that finished without failures",
        )
        self.retention_actions_total = Counter(
            "hybridmem_retention_actions_total",
            "Records acted on by retention, per action (archived | deleted | expired) and record_type",
            ("action", "record_type"),
        )
        # --- data integrity (jobs/integrity.py) ---
        self.integrity_drift_records = Gauge(
            "hybridmem_integrity_drift_records",
            "Drift found by the last integrity check, per kind (missing_points | orphan_points)",
            ("kind",),
        )

    def all(self) -> list[_Metric]:
        """Every declared metric, in declaration order."""
        return [m for m in vars(self).values() if isinstance(m, _Metric)]


METRICS = Metrics()


@dataclass
class OperationStats:
    """Filled in by the caller inside :func:`store_operation` (records written, once known)."""

    records: int = 0


@contextmanager
def store_operation(store: str, operation: str, *, records: int = 0) -> Iterator[OperationStats]:
    """Time one store call; on success count the records written, on a store failure count an error.

    Outcome ``ok``: the store answered (a refusal such as NotFound or InvalidInput included);
    ``error``: unreachable, timed out or failed (StoreUnavailable or an untranslated exception);
    ``cancelled``: the caller gave up (e.g. a retrieval tier timeout). Wrap the call, not the caller's
    logic: ``with store_operation("postgres", "insert_episodes") as op: op.records = len(await ...)``.
    """
    stats = OperationStats(records=records)
    start = time.perf_counter()
    outcome = "error"
    try:
        yield stats
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except HybridMemError as exc:
        if not isinstance(exc, StoreUnavailable):
            outcome = "ok"
        raise
    finally:
        elapsed = time.perf_counter() - start
        METRICS.store_operation_seconds.observe(elapsed, store=store, operation=operation, outcome=outcome)
        if outcome == "ok":
            METRICS.ingest_records_total.inc(stats.records, store=store, operation=operation)
        elif outcome == "error":
            METRICS.store_errors_total.inc(1, store=store, operation=operation)


def observe_http(scope: Mapping[str, Any], method: str, status: int, seconds: float) -> None:
    """One HTTP request at the ingress, labelled by its route template (``scope["route"].path``)."""
    route = str(getattr(scope.get("route"), "path", "unmatched"))
    METRICS.http_requests_total.inc(route=route, method=method, status=status)
    METRICS.http_request_seconds.observe(seconds, route=route, method=method)


def observe_retrieval(
    endpoint: str,
    snippets: Sequence[ScoredSnippet],
    *,
    tokens_used: int | None = None,
    token_budget: int | None = None,
) -> None:
    """Result size, relevance (semantic similarity of the returned snippets) and context token use."""
    METRICS.retrieval_results.observe(len(snippets), endpoint=endpoint)
    similarities = [s.scores["semantic"] for s in snippets if "semantic" in s.scores]
    if similarities:
        best = max(similarities)
        METRICS.retrieval_top_score.observe(best, endpoint=endpoint)
        METRICS.retrieval_score_spread.observe(best - min(similarities), endpoint=endpoint)
    if tokens_used is not None:
        METRICS.context_tokens_used.observe(tokens_used)
        if token_budget:
            METRICS.context_budget_ratio.observe(tokens_used / token_budget)


_STAGE_OF_STORE = {"redis": "drain", "qdrant": "upsert", "postgres": "checkpoint"}


def failure_stage(exc: BaseException) -> str:
    """The consolidation stage an exception points at (label of consolidation_failures_total)."""
    if isinstance(exc, StoreUnavailable):
        return _STAGE_OF_STORE.get(exc.store, "other")
    if isinstance(exc, EmbeddingError):
        return "embed"
    return "other"


def observe_partition(
    status: str, seconds: float, *, episodes: int = 0, counts: Mapping[str, int] | None = None
) -> None:
    """One partition finished (status done | locked | failed): duration, episodes, records per type."""
    METRICS.consolidation_partition_seconds.observe(seconds, outcome=status)
    METRICS.consolidation_episodes_total.inc(episodes)
    for record_type, n in (counts or {}).items():
        METRICS.consolidation_records_total.inc(n, record_type=record_type)


def observe_consolidation_run(status: str, seconds: float) -> None:
    """One run finished (status succeeded | failed); a success also stamps the last-success gauge."""
    METRICS.consolidation_runs_total.inc(outcome=status)
    METRICS.consolidation_run_seconds.observe(seconds, outcome=status)
    if status == "succeeded":
        METRICS.consolidation_last_success_timestamp_seconds.set(time.time())


class _Rows(Protocol):
    # asyncpg's signature (Pool / Connection): the timeout is the driver's own per-statement timeout
    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...  # noqa: ASYNC109


_BACKLOG_SQL = """SELECT partition, count(*) AS n FROM episodes
WHERE consolidated_at IS NULL AND partition = ANY($1::int[]) GROUP BY partition"""


async def refresh_backlog(db: _Rows, partitions: Iterable[int], *, timeout_s: float = 10.0) -> int:
    """Count unconsolidated episodes per partition (partial index scan), set the gauge; returns the total."""
    wanted = list(partitions)
    rows = await db.fetch(_BACKLOG_SQL, wanted, timeout=timeout_s)
    counts = {int(r["partition"]): int(r["n"]) for r in rows}
    for partition in wanted:
        METRICS.consolidation_backlog_episodes.set(counts.get(partition, 0), partition=partition)
    return sum(counts.values())
