"""Metric handles, the backend contract, and the prometheus-client backend (machinery of core.metrics).

A handle (:class:`Counter`, :class:`Gauge`, :class:`Histogram`) holds one :class:`MetricSpec` and binds to
the process's :class:`MetricsBackend` on first use, never at import; :func:`use_backend` switches the
backend (handles rebind lazily). Declarations are checked: ``hybridmem_`` prefix, ``_total`` on counters
only, no unbounded labels, strictly positive histogram buckets (Ray requires them).
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
                spec.name,
                spec.help,
                spec.labels,
                registry=registry,
                buckets=spec.buckets or PromHistogram.DEFAULT_BUCKETS,
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
        self._made: dict[str, _PromInstrument] = {}

    def create(self, spec: MetricSpec) -> Instrument:
        # A registry takes each name once: re-binding after a backend switch reuses the instrument.
        with _lock:
            made = self._made.get(spec.name)
            if made is None:
                made = self._made[spec.name] = _PromInstrument(spec, self.registry)
            return made

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

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self._inflight: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, **labels: object) -> None:
        self._record(float(value), labels)

    @contextmanager
    def track(self, n: float = 1, **labels: object) -> Iterator[None]:
        """Add ``n`` for the duration of the block (in-flight work: queue depth), per label set."""
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with _lock:
            value = self._inflight[key] = self._inflight.get(key, 0.0) + n
        self.set(value, **labels)
        try:
            yield
        finally:
            with _lock:
                value = self._inflight[key] = self._inflight[key] - n
            self.set(value, **labels)

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
