"""The metric catalogue follows the conventions, binds lazily, and renders through prometheus-client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from core import metrics as m
from core.errors import EmbeddingError, StoreUnavailable
from core.metrics import (
    METRICS,
    MetricKind,
    MetricSpec,
    PrometheusBackend,
    failure_stage,
    observe_consolidation_run,
    observe_http,
    observe_partition,
    observe_retrieval,
    store_operation,
)
from core.models import ScoredSnippet, Tier

REQUIRED = {
    "hybridmem_ingest_records_total",
    "hybridmem_store_operation_seconds",
    "hybridmem_store_errors_total",
    "hybridmem_embedding_batch_size",
    "hybridmem_embedding_seconds",
    "hybridmem_embedding_queue_depth",
    "hybridmem_embedding_truncations_total",
    "hybridmem_embedding_cache_hits_total",
    "hybridmem_embedding_cache_misses_total",
    "hybridmem_retrieval_seconds",
    "hybridmem_retrieval_tier_seconds",
    "hybridmem_retrieval_top_score",
    "hybridmem_retrieval_score_spread",
    "hybridmem_context_tokens_used",
    "hybridmem_context_budget_ratio",
    "hybridmem_consolidation_run_seconds",
    "hybridmem_consolidation_episodes_total",
    "hybridmem_consolidation_backlog_episodes",
    "hybridmem_consolidation_failures_total",
    "hybridmem_retention_actions_total",
}


class RecordingBackend:
    """A MetricsBackend that remembers what was created and recorded (implements the Protocol)."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.records: list[tuple[str, float, dict[str, str]]] = []

    def create(self, spec: MetricSpec) -> m.Instrument:
        self.created.append(spec.name)
        backend = self

        class _Recorder:
            def record(self, value: float, labels: dict[str, str]) -> None:  # type: ignore[override]
                backend.records.append((spec.name, value, dict(labels)))

        return _Recorder()


@pytest.fixture
def prom() -> Iterator[PrometheusBackend]:
    """A fresh prometheus backend for the test; the process backend is restored afterwards."""
    backend = PrometheusBackend()
    m.use_backend(backend)
    try:
        yield backend
    finally:
        m.use_backend(None)


def _samples(backend: PrometheusBackend) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(backend.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_catalogue_has_every_required_metric_once() -> None:
    names = [metric.spec.name for metric in METRICS.all()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED


@pytest.mark.parametrize("metric", METRICS.all(), ids=lambda x: x.spec.name)
def test_declaration_follows_conventions(metric: m._Metric) -> None:
    spec = metric.spec
    assert spec.name.startswith("hybridmem_")
    assert spec.name.endswith("_total") == (spec.kind is MetricKind.COUNTER)
    assert not m.FORBIDDEN_LABELS.intersection(spec.labels)
    assert "partition" not in spec.labels or spec.name == "hybridmem_consolidation_backlog_episodes"
    assert "seconds" not in spec.name or spec.name.endswith(("_seconds", "_timestamp_seconds"))
    if spec.kind is MetricKind.HISTOGRAM:
        assert spec.buckets and list(spec.buckets) == sorted(spec.buckets) and spec.buckets[0] > 0
    assert spec.help and spec.ray_name == "ray_" + spec.name


@pytest.mark.parametrize(
    ("factory", "args"),
    [
        (m.Counter, ("requests_total", "no prefix")),
        (m.Counter, ("hybridmem_requests", "counter without _total")),
        (m.Gauge, ("hybridmem_depth_total", "gauge with _total")),
        (m.Counter, ("hybridmem_x_total", "tenant label", ("tenant_id",))),
        (m.Gauge, ("hybridmem_depth", "session label", ("session_id",))),
        (m.Histogram, ("hybridmem_x_seconds", "partition label", ("partition",), (0.1, 1.0))),
        (m.Histogram, ("hybridmem_score", "zero bucket", (), (0.0, 1.0))),
    ],
)
def test_bad_declarations_are_refused(factory: type[m._Metric], args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        factory(*args)  # type: ignore[arg-type]


def test_handles_bind_lazily_and_rebind_after_a_backend_switch() -> None:
    recording = RecordingBackend()
    counter = m.Counter("hybridmem_probe_total", "probe", ("outcome",))
    m.use_backend(recording)
    try:
        assert recording.created == []  # declaring and switching did no registry work
        counter.inc(2, outcome="ok")
        counter.labels(outcome="ok").inc()
        assert recording.created == ["hybridmem_probe_total"]
        assert recording.records == [
            ("hybridmem_probe_total", 2.0, {"outcome": "ok"}),
            ("hybridmem_probe_total", 1.0, {"outcome": "ok"}),
        ]
        second = RecordingBackend()
        m.use_backend(second)
        counter.inc(1, outcome="error")
        assert second.records == [("hybridmem_probe_total", 1.0, {"outcome": "error"})]
    finally:
        m.use_backend(None)


def test_prometheus_backend_renders_counters_gauges_histograms(prom: PrometheusBackend) -> None:
    METRICS.ingest_records_total.labels(store="postgres", operation="insert_episodes").inc(3)
    METRICS.ingest_records_total.inc(2, store="postgres", operation="insert_episodes")
    METRICS.consolidation_backlog_episodes.set(7, partition=3)
    METRICS.retrieval_tier_seconds.observe(0.02, tier="semantic")
    METRICS.retrieval_tier_seconds.observe(3.0, tier="semantic")
    samples = _samples(prom)
    pg = frozenset({("store", "postgres"), ("operation", "insert_episodes")})
    assert samples[("hybridmem_ingest_records_total", pg)] == 5
    assert samples[("hybridmem_consolidation_backlog_episodes", frozenset({("partition", "3")}))] == 7
    sem = frozenset({("tier", "semantic")})
    assert samples[("hybridmem_retrieval_tier_seconds_count", sem)] == 2
    assert samples[("hybridmem_retrieval_tier_seconds_sum", sem)] == pytest.approx(3.02)
    assert samples[("hybridmem_retrieval_tier_seconds_bucket", sem | {("le", "0.025")})] == 1
    assert samples[("hybridmem_retrieval_tier_seconds_bucket", sem | {("le", "5.0")})] == 2


def test_render_latest_serves_the_process_registry() -> None:
    before = m.local_backend().render()
    METRICS.embedding_cache_hits_total.inc(4)
    text = m.render_latest().decode()
    assert "# TYPE hybridmem_embedding_cache_hits_total counter" in text
    assert text != before.decode()
    assert m.CONTENT_TYPE.startswith("text/plain")


def test_labels_must_match_the_declaration(prom: PrometheusBackend) -> None:
    with pytest.raises(ValueError, match="takes labels"):
        METRICS.store_errors_total.inc(1, store="redis")
    with pytest.raises(ValueError, match="takes labels"):
        METRICS.store_errors_total.inc(1, store="redis", operation="get", tenant_id="t")
    with pytest.raises(ValueError, match="cannot decrease"):
        METRICS.store_errors_total.inc(-1, store="redis", operation="get")


def test_zero_increment_records_nothing(prom: PrometheusBackend) -> None:
    METRICS.embedding_truncations_total.inc(0)
    assert not any(name == "hybridmem_embedding_truncations_total" for name, _ in _samples(prom))


def test_timer_observes_also_when_the_block_raises(prom: PrometheusBackend) -> None:
    with METRICS.retrieval_seconds.timer(endpoint="search"):
        pass
    with pytest.raises(RuntimeError), METRICS.retrieval_seconds.labels(endpoint="search").timer():
        raise RuntimeError("boom")
    assert _samples(prom)[("hybridmem_retrieval_seconds_count", frozenset({("endpoint", "search")}))] == 2


def test_store_operation_counts_records_latency_and_errors(prom: PrometheusBackend) -> None:
    with store_operation("redis", "append_session", records=4):
        pass
    with pytest.raises(ConnectionError), store_operation("redis", "append_session", records=4):
        raise ConnectionError("down")
    samples = _samples(prom)
    op = frozenset({("store", "redis"), ("operation", "append_session")})
    assert samples[("hybridmem_ingest_records_total", op)] == 4  # the failed call wrote nothing
    assert samples[("hybridmem_store_errors_total", op)] == 1
    assert samples[("hybridmem_store_operation_seconds_count", op | {("outcome", "ok")})] == 1
    assert samples[("hybridmem_store_operation_seconds_count", op | {("outcome", "error")})] == 1


def test_gauge_track_counts_in_flight_work(prom: PrometheusBackend) -> None:
    depth = ("hybridmem_embedding_queue_depth", frozenset())
    with METRICS.embedding_queue_depth.track(5):
        with METRICS.embedding_queue_depth.track(3):
            assert _samples(prom)[depth] == 8
        assert _samples(prom)[depth] == 5
    assert _samples(prom)[depth] == 0


def _snippet(score: float, semantic: float | None) -> ScoredSnippet:
    scores = {"fused": score} | ({"semantic": semantic} if semantic is not None else {})
    return ScoredSnippet(tier=Tier.SEMANTIC, content="x", score=score, scores=scores)


def test_observe_retrieval_records_relevance_and_tokens(prom: PrometheusBackend) -> None:
    snippets = [_snippet(0.03, 0.82), _snippet(0.02, 0.41), _snippet(0.01, None)]
    observe_retrieval("context", snippets, tokens_used=300, token_budget=400)
    observe_retrieval("search", [])
    s = _samples(prom)
    ctx = frozenset({("endpoint", "context")})
    assert s[("hybridmem_retrieval_top_score_sum", ctx)] == pytest.approx(0.82)
    assert s[("hybridmem_retrieval_score_spread_sum", ctx)] == pytest.approx(0.41)
    assert s[("hybridmem_retrieval_results_sum", ctx)] == 3
    assert s[("hybridmem_context_tokens_used_sum", frozenset())] == 300
    assert s[("hybridmem_context_budget_ratio_sum", frozenset())] == pytest.approx(0.75)
    search = frozenset({("endpoint", "search")})
    assert s[("hybridmem_retrieval_results_count", search)] == 1
    assert ("hybridmem_retrieval_top_score_count", search) not in s  # no semantic hit, no relevance sample


@pytest.mark.parametrize(
    ("exc", "stage"),
    [
        (StoreUnavailable("redis"), "drain"),
        (StoreUnavailable("qdrant"), "upsert"),
        (StoreUnavailable("postgres"), "checkpoint"),
        (EmbeddingError("model failed"), "embed"),
        (RuntimeError("boom"), "other"),
    ],
)
def test_failure_stage(exc: BaseException, stage: str) -> None:
    assert failure_stage(exc) == stage


def test_consolidation_observers(prom: PrometheusBackend) -> None:
    observe_partition("done", 2.5, episodes=40, counts={"episode": 38, "summary": 3})
    observe_partition("failed", 0.5)
    observe_consolidation_run("failed", 3.0)
    before = time.time()
    observe_consolidation_run("succeeded", 4.0)
    s = _samples(prom)
    assert s[("hybridmem_consolidation_episodes_total", frozenset())] == 40
    assert s[("hybridmem_consolidation_records_total", frozenset({("record_type", "summary")}))] == 3
    assert s[("hybridmem_consolidation_partition_seconds_count", frozenset({("outcome", "failed")}))] == 1
    assert s[("hybridmem_consolidation_runs_total", frozenset({("outcome", "failed")}))] == 1
    assert s[("hybridmem_consolidation_run_seconds_sum", frozenset({("outcome", "succeeded")}))] == 4.0
    assert s[("hybridmem_consolidation_last_success_timestamp_seconds", frozenset())] >= before


async def test_a_cancelled_store_call_is_not_a_store_error(prom: PrometheusBackend) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            with store_operation("qdrant", "search"):
                await asyncio.sleep(5)
    s = _samples(prom)
    op = frozenset({("store", "qdrant"), ("operation", "search")})
    assert s[("hybridmem_store_operation_seconds_count", op | {("outcome", "cancelled")})] == 1
    assert ("hybridmem_store_errors_total", op) not in s


async def test_observe_http_labels_by_route_template(prom: PrometheusBackend) -> None:
    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        observe_http(request.scope, request.method, response.status_code, time.perf_counter() - start)
        return response

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for path in ("/v1/items/a", "/v1/items/b", "/v1/items/tenant-secret-id", "/nope"):
            await client.get(path)
    s = _samples(prom)
    ok = frozenset({("route", "/v1/items/{item_id}"), ("method", "GET"), ("status", "200")})
    assert s[("hybridmem_http_requests_total", ok)] == 3
    missing = frozenset({("route", "unmatched"), ("method", "GET"), ("status", "404")})
    assert s[("hybridmem_http_requests_total", missing)] == 1
    assert "tenant-secret-id" not in prom.render().decode()  # raw paths never become label values
