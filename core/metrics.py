"""Every hybridmem metric, declared once, published through a swappable backend.

Each metric is one :class:`MetricSpec` (name, kind, help, label names, buckets) held by a typed handle in
:data:`METRICS`. Handles bind to the process's backend on first use, never at import: outside Ray the
backend is prometheus-client on a private registry (:func:`render_latest` serves ``GET /metrics``); inside
Ray processes ``deployments.metrics_backend.install_ray_metrics()`` swaps in ``ray.util.metrics`` so
values from every replica and job worker aggregate on Ray's Prometheus endpoint (exported there with a
``ray_`` prefix: ``hybridmem_x_total`` → ``ray_hybridmem_x_total``).

Labels are bounded by design: never a tenant, session, agent or record id. ``partition`` is allowed on
the backlog gauge only (at most ``consolidation.n_partitions`` series).

    METRICS.ingest_records_total.inc(3, store="postgres", operation="insert_episodes")
    with METRICS.retrieval_seconds.timer(mode="search"):
        ...
    with store_operation("redis", "append_session", records=len(turns)):
        ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "hybridmem_"
RAY_EXPORT_PREFIX = "ray_"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Labels that would make a series per tenant / session / record: refused by declaration and by tests.
FORBIDDEN_LABELS = frozenset(
    {"tenant", "tenant_id", "session", "session_id", "agent", "agent_id", "record_id", "episode_id", "key"}
)
PARTITION_LABEL_ALLOWED = frozenset({"hybridmem_consolidation_backlog_episodes"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# Ray histograms need strictly positive boundaries: scores <= 0.05 land in the first bucket.
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
TOKEN_BUCKETS = (16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05)
COUNT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


class MetricKind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """What a backend needs to create one metric."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def ray_name(self) -> str:
        """The name on Ray's Prometheus endpoint (Ray prefixes application metrics with ``ray_``)."""
        return RAY_EXPORT_PREFIX + self.name


class Instrument(Protocol):
    """One backend metric; ``labels`` always holds exactly the spec's label names."""

    def record(self, value: float, labels: Mapping[str, str]) -> None: ...


class MetricsBackend(Protocol):
    """Creates instruments; counters record increments, gauges values, histograms observations."""

    def create(self, spec: MetricSpec) -> Instrument: ...


class _PromInstrument:
    def __init__(self, spec: MetricSpec, registry: CollectorRegistry) -> None:
        self._kind = spec.kind
        self._has_labels = bool(spec.labels)
        self._metric: PromCounter | PromGauge | PromHistogram
        if spec.kind is MetricKind.COUNTER:
            self._metric = PromCounter(spec.name, spec.help, spec.labels, registry=registry)
        elif spec.kind is MetricKind.GAUGE:
            self._metric = PromGauge(spec.name, spec.help, spec.labels, registry=registry)
        else:
            self._metric = PromHistogram(
                spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or LATENCY_BUCKETS
            )

    def record(self, value: float, labels: Mapping[str, str]) -> None:
        metric = self._metric.labels(**labels) if self._has_labels else self._metric
        if isinstance(metric, PromCounter):
            metric.inc(value)
        elif isinstance(metric, PromGauge):
            metric.set(value)
        else:
            metric.observe(value)


class PrometheusBackend:
    """prometheus-client on its own registry (never the global one, so tests and apps don't collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)

    def create(self, spec: MetricSpec) -> Instrument:
        return _PromInstrument(spec, self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_lock = threading.Lock()
_local: PrometheusBackend | None = None
_backend: MetricsBackend | None = None
_generation = 0


def local_backend() -> PrometheusBackend:
    """This process's prometheus-client backend (created on first use)."""
    global _local
    with _lock:
        if _local is None:
            _local = PrometheusBackend()
        return _local


def current_backend() -> MetricsBackend:
    """The backend metrics publish to: the one set by :func:`use_backend`, else :func:`local_backend`."""
    return _backend if _backend is not None else local_backend()


def use_backend(backend: MetricsBackend | None) -> None:
    """Switch this process's backend (None: back to the local prometheus backend); handles rebind lazily."""
    global _backend, _generation
    with _lock:
        _backend = backend
        _generation += 1


def render_latest() -> bytes:
    """Text exposition of this process's local registry, for ``GET /metrics`` (content type CONTENT_TYPE)."""
    return local_backend().render()


def _check_declaration(spec: MetricSpec) -> None:
    """Refuse names and labels that break the conventions (prefix, suffix, bounded labels)."""
    if not spec.name.startswith(PREFIX):
        raise ValueError(f"{spec.name}: metric names start with {PREFIX!r}")
    if (spec.kind is MetricKind.COUNTER) != spec.name.endswith("_total"):
        raise ValueError(f"{spec.name}: counters, and only counters, end in '_total'")
    unbounded = FORBIDDEN_LABELS.intersection(spec.labels)
    if unbounded or ("partition" in spec.labels and spec.name not in PARTITION_LABEL_ALLOWED):
        raise ValueError(f"{spec.name}: unbounded label(s) {sorted(unbounded) or ['partition']}")
    if spec.kind is MetricKind.HISTOGRAM and not (spec.buckets and all(b > 0 for b in spec.buckets)):
        raise ValueError(f"{spec.name}: histograms need strictly positive buckets (Ray requires them)")


class _Metric:
    """A declared metric; resolves its backend instrument on first use and after a backend switch."""

    kind: MetricKind

    def __init__(
        self, name: str, help: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] | None = None
    ) -> None:
        self.spec = MetricSpec(name=name, kind=self.kind, help=help, labels=labels, buckets=buckets)
        _check_declaration(self.spec)
        self._label_set = frozenset(labels)
        self._instrument: Instrument | None = None
        self._bound_generation = -1

    def _resolve(self) -> Instrument:
        instrument = self._instrument
        if instrument is None or self._bound_generation != _generation:
            with _lock:
                generation = _generation
            instrument = current_backend().create(self.spec)
            self._instrument, self._bound_generation = instrument, generation
        return instrument

    def _record(self, value: float, labels: Mapping[str, object]) -> None:
        if labels.keys() != self._label_set:
            raise ValueError(f"{self.spec.name} takes labels {sorted(self._label_set)}, got {sorted(labels)}")
        self._resolve().record(value, {k: str(v) for k, v in labels.items()})


class Counter(_Metric):
    """Monotonic count; the name ends in ``_total``."""

    kind = MetricKind.COUNTER

    def inc(self, n: float = 1, **labels: object) -> None:
        if n < 0:
            raise ValueError(f"{self.spec.name}: a counter cannot decrease (got {n})")
        if n:  # Ray counters refuse 0; nothing to record anyway
            self._record(float(n), labels)

    def labels(self, **labels: object) -> _BoundCounter:
        return _BoundCounter(self, labels)


class Gauge(_Metric):
    """A value that goes up and down (set absolute values: each process owns its label combination)."""

    kind = MetricKind.GAUGE

    def set(self, value: float, **labels: object) -> None:
        self._record(float(value), labels)

    def labels(self, **labels: object) -> _BoundGauge:
        return _BoundGauge(self, labels)


class Histogram(_Metric):
    """A distribution (latencies in seconds, sizes, scores)."""

    kind = MetricKind.HISTOGRAM

    def observe(self, value: float, **labels: object) -> None:
        self._record(float(value), labels)

    @contextmanager
    def timer(self, **labels: object) -> Iterator[None]:
        """Observe the elapsed wall time of the block in seconds (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start, **labels)

    def labels(self, **labels: object) -> _BoundHistogram:
        return _BoundHistogram(self, labels)


@dataclass(frozen=True)
class _BoundCounter:
    metric: Counter
    values: Mapping[str, object]

    def inc(self, n: float = 1) -> None:
        self.metric.inc(n, **self.values)


@dataclass(frozen=True)
class _BoundGauge:
    metric: Gauge
    values: Mapping[str, object]

    def set(self, value: float) -> None:
        self.metric.set(value, **self.values)


@dataclass(frozen=True)
class _BoundHistogram:
    metric: Histogram
    values: Mapping[str, object]

    def observe(self, value: float) -> None:
        self.metric.observe(value, **self.values)

    def timer(self) -> AbstractContextManager[None]:
        return self.metric.timer(**self.values)


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
            "Latency of one store call (reads and writes), per store, operation and outcome (ok | error)",
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
            "hybridmem_embedding_queue_depth", "Texts waiting for a model call in this embedder replica"
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
        # --- retrieval (tier: working | episodic | semantic; mode: search | context) ---
        self.retrieval_seconds = Histogram(
            "hybridmem_retrieval_seconds",
            "End-to-end retrieval latency, per mode",
            ("mode",),
            LATENCY_BUCKETS,
        )
        self.retrieval_tier_seconds = Histogram(
            "hybridmem_retrieval_tier_seconds",
            "Latency of one tier's candidate fetch (query embedding excluded)",
            ("tier",),
            LATENCY_BUCKETS,
        )
        self.retrieval_tier_degraded_total = Counter(
            "hybridmem_retrieval_tier_degraded_total",
            "Retrievals answered without a tier (it failed or exceeded retrieval.tier_timeout_s)",
            ("tier",),
        )
        self.retrieval_results = Histogram(
            "hybridmem_retrieval_results", "Snippets returned by one retrieval", ("mode",), COUNT_BUCKETS
        )
        self.retrieval_top_score = Histogram(
            "hybridmem_retrieval_top_score",
            "Best semantic similarity (cosine) among the returned snippets",
            ("mode",),
            SCORE_BUCKETS,
        )
        self.retrieval_score_spread = Histogram(
            "hybridmem_retrieval_score_spread",
            "Best minus worst semantic similarity among the returned snippets",
            ("mode",),
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
            "Duration of one consolidation run (all its partitions), per outcome (ok | failed)",
            ("outcome",),
            JOB_BUCKETS,
        )
        self.consolidation_partition_seconds = Histogram(
            "hybridmem_consolidation_partition_seconds",
            "Duration of consolidating one partition, per outcome (ok | failed)",
            ("outcome",),
            JOB_BUCKETS,
        )
        self.consolidation_runs_total = Counter(
            "hybridmem_consolidation_runs_total", "Consolidation runs finished, per outcome", ("outcome",)
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


@contextmanager
def store_operation(store: str, operation: str, *, records: int = 0) -> Iterator[None]:
    """Time one store call; on success count ``records`` written, on error count a store error.

    Wrap the call, not the caller's logic: ``with store_operation("postgres", "insert", records=n):``.
    """
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        elapsed = time.perf_counter() - start
        METRICS.store_operation_seconds.observe(elapsed, store=store, operation=operation, outcome=outcome)
        if outcome == "ok":
            METRICS.ingest_records_total.inc(records, store=store, operation=operation)
        else:
            METRICS.store_errors_total.inc(1, store=store, operation=operation)
