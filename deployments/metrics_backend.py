"""Publishes core.metrics through Ray's metrics API inside Ray processes, and sets up their logging.

``install_ray_metrics()`` switches this process's metrics backend to ``ray.serve.metrics`` (which is
``ray.util.metrics`` plus deployment/replica/application tags inside a replica; tag keys = label names).
Values from every Serve replica and job worker then aggregate on Ray's Prometheus endpoint (each node's
metrics export port, names prefixed ``ray_``) and show in the Ray dashboard next to Serve's built-ins.
Every value is also kept in the process's local prometheus registry, so the ingress's ``GET /metrics``
still reports what its own process saw. Call :func:`init_observability` first thing in each
deployment's ``__init__`` and at the start of every job worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray.serve import metrics as ray_metrics

from core.logs import configure_logging, set_request_id_fallback
from core.metrics import (
    Instrument,
    MetricKind,
    MetricSpec,
    PrometheusBackend,
    current_backend,
    local_backend,
    use_backend,
)
from core.settings import Settings
from deployments.memtrace import start_memtrace

logger = logging.getLogger(__name__)

RayMetric = ray_metrics.Counter | ray_metrics.Gauge | ray_metrics.Histogram


class GaugeKeeper:
    """Re-sends the last value of every gauge series of this process, every ``interval_s``.

    Ray exports a gauge only in the report interval it was set in, and its metrics agent drops a gauge
    series that was not reported for two intervals (20 s by default). A gauge set once (the last
    successful consolidation, the backlog, integrity drift, an idle queue's 0) would vanish from the
    metrics endpoint while its process lives, and Prometheus would mark it stale: the dashboard and
    the alerts would see no data. Found by running the ops files in a real Prometheus (the fault suite).
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[ray_metrics.Gauge, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def remember(self, metric: ray_metrics.Gauge, tags: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._last[(id(metric), tuple(sorted(tags.items())))] = (metric, value)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hybridmem-gauge-keeper", daemon=True)
                self._thread.start()

    def refresh(self) -> int:
        """Send every remembered value once more; returns how many series were sent."""
        with self._lock:
            series = list(self._last.items())
        for (_, tags), (metric, value) in series:
            try:
                metric.set(value, tags=dict(tags))
            except Exception:  # never let a metrics refresh kill the thread
                logger.debug("gauge refresh failed", exc_info=True)
        return len(series)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            self.refresh()


def _refresh_interval_s() -> float:
    """Half of Ray's metrics report interval (so every export carries every gauge), at least 1 s."""
    try:
        report_ms = float(ray._config.metrics_report_interval_ms())
    except Exception:  # private API: fall back to Ray's default of 10 s
        report_ms = 10_000.0
    return max(1.0, report_ms / 2000.0)


class _RayInstrument:
    def __init__(
        self, kind: MetricKind, metric: RayMetric, local: Instrument | None, keeper: GaugeKeeper | None = None
    ) -> None:
        self._kind = kind
        self._metric = metric
        self._local = local
        self._keeper = keeper

    def record(self, value: float, labels: Mapping[str, str]) -> None:
        tags = dict(labels)
        if isinstance(self._metric, ray_metrics.Counter):
            self._metric.inc(value, tags=tags)
        elif isinstance(self._metric, ray_metrics.Gauge):
            self._metric.set(value, tags=tags)
            if self._keeper is not None:
                self._keeper.remember(self._metric, tags, value)
        else:
            self._metric.observe(value, tags=tags)
        if self._local is not None:
            self._local.record(value, labels)


class RayMetricsBackend:
    """core.metrics backend on ``ray.serve.metrics``; optionally tees every value into a local registry."""

    def __init__(self, *, tee: PrometheusBackend | None = None, keeper: GaugeKeeper | None = None) -> None:
        self._tee = tee
        self._keeper = keeper if keeper is not None else GaugeKeeper(_refresh_interval_s())

    def create(self, spec: MetricSpec) -> Instrument:
        metric: RayMetric
        tag_keys: Any = spec.labels  # Ray annotates tag_keys as Tuple[str] but takes any tuple of str
        if spec.kind is MetricKind.COUNTER:
            metric = ray_metrics.Counter(spec.name, description=spec.help, tag_keys=tag_keys)
        elif spec.kind is MetricKind.GAUGE:
            metric = ray_metrics.Gauge(spec.name, description=spec.help, tag_keys=tag_keys)
        else:
            metric = ray_metrics.Histogram(
                spec.name, description=spec.help, boundaries=list(spec.buckets or ()), tag_keys=tag_keys
            )
        local = self._tee.create(spec) if self._tee is not None else None
        return _RayInstrument(spec.kind, metric, local, self._keeper)


def serve_request_id() -> str | None:
    """The request id of the Serve request being handled (Serve copies it across handle calls)."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or None
    except (ImportError, AttributeError):  # private API: degrade to "no request id", never fail a log call
        return None


def install_ray_metrics() -> bool:
    """Publish this process's metrics through Ray (idempotent). False when Ray is not initialised here."""
    if isinstance(current_backend(), RayMetricsBackend):
        return True
    if not ray.is_initialized():
        logger.info("Ray is not initialised in this process; metrics stay on the local prometheus registry")
        return False
    use_backend(RayMetricsBackend(tee=local_backend()))
    set_request_id_fallback(serve_request_id)
    return True


LOG_FLUSH_INTERVAL_S = 1.0
_flusher_started = False


def serve_log_sink() -> logging.Logger | None:
    """Serve's logger when this process is a Serve replica that writes a log file (the app's records go
    there as structured records, see core.logs.ForwardingHandler); None elsewhere (stderr).

    Serve buffers a replica's records in memory (1,000 of them with ``RAY_SERVE_THROUGHPUT_OPTIMIZED``)
    and writes them when the buffer is full or an ERROR arrives, so a replica that dies takes its last
    records with it, and a quiet one shows an empty log. A daemon thread here writes the buffer out
    every ``LOG_FLUSH_INTERVAL_S``: the log is at most that far behind, and the request path still
    never waits on the file."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.get_replica_context()
    except RayServeException:
        return None
    sink = logging.getLogger("ray.serve")
    if not sink.handlers:
        return None
    _start_log_flusher(sink)
    return sink


def _start_log_flusher(sink: logging.Logger) -> None:
    global _flusher_started
    if _flusher_started:
        return
    _flusher_started = True

    def flush_forever() -> None:
        while True:
            time.sleep(LOG_FLUSH_INTERVAL_S)
            for handler in list(sink.handlers):
                try:
                    handler.flush()
                except Exception:  # a rotating file mid-rollover, say: the next tick retries
                    continue

    threading.Thread(target=flush_forever, name="hybridmem-log-flush", daemon=True).start()


def init_observability(settings: Settings) -> None:
    """JSON logs at the configured level, Ray-published metrics and, when configured, memory tracing:
    one call per Ray process."""
    configure_logging(settings.log_level, json=settings.log_json, sink=serve_log_sink())
    install_ray_metrics()
    if settings.memtrace_interval_s:
        start_memtrace(settings.memtrace_interval_s, process=_process_name())


def _process_name() -> str:
    """The Serve deployment this replica belongs to, else "worker"."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return str(serve.get_replica_context().deployment)
    except RayServeException:  # not inside a replica
        return "worker"
