"""Real traffic through the Serve app moves the metrics on Ray's Prometheus endpoint by the expected amounts.

Ray exports application metrics from every replica (names prefixed ``ray_``) on each node's metrics
export port; the ingress also serves its own process's metrics at ``GET /metrics``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.ids import partition_of
from tests.serve.conftest import AppServer

pytestmark = pytest.mark.serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
EXPORT_WAIT_S = 60.0  # Ray exports every metrics_report_interval_ms (10 s by default)
EXPORT_SETTLE_S = 12.0  # one export interval and a margin


def _scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels`` (all replicas and workers)."""
    wanted = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and wanted <= lbl)


def _ray_metrics_url() -> str:
    import ray

    node = ray._private.worker.global_worker.node
    return f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"


def _wait_for(check: Callable[[Samples], list[str]], url: str) -> Samples:
    """Scrape until ``check`` reports nothing missing (Ray exports on an interval)."""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        samples = _scrape(url)
        missing = check(samples)
        if not missing:
            return samples
        if time.monotonic() > deadline:
            pytest.fail("metrics did not move as expected: " + "; ".join(missing))
        time.sleep(1.0)


def _quiesce(app_server: AppServer) -> None:
    """The shared app as this test needs it: nothing left to consolidate (other modules' episodes), and
    Ray's endpoint caught up with the traffic before (it exports every 10 s)."""
    with app_server.client("a_admin") as admin:
        run = admin.post("/v1/admin/consolidations", json={}).json()
        deadline = time.monotonic() + 240
        while admin.get(f"/v1/admin/consolidations/{run['id']}").json()["status"] == "running":
            assert time.monotonic() < deadline, "the backlog was not consolidated"
            time.sleep(0.5)
    time.sleep(EXPORT_SETTLE_S)


def test_traffic_moves_counters_and_histograms_on_rays_endpoint(app_server: AppServer) -> None:
    url = _ray_metrics_url()
    _quiesce(app_server)
    before = _scrape(url)
    session = f"obs-{uuid.uuid4().hex[:8]}"
    turns = [f"observability turn {i}: the deploy window is Friday at {i} pm" for i in range(5)]
    with app_server.client("a_rw") as client:
        r = client.post(
            "/v1/episodes/batch",
            json={"episodes": [{"agent_id": "obs", "session_id": session, "content": t} for t in turns]},
            headers={"X-Request-ID": "obs-request-1"},
        )
        assert r.status_code == 201, r.text
        assert "obs-request-1" in r.headers["x-request-id"]
    with app_server.client("a_admin") as admin:
        n_partitions = app_server.settings.get("consolidation", {}).get("n_partitions", 16)
        partition = partition_of(app_server.tenants["a"], session, n_partitions)
        run = admin.post("/v1/admin/consolidations", json={"partitions": [partition]}).json()
        deadline = time.monotonic() + 240
        while (record := admin.get(f"/v1/admin/consolidations/{run['id']}").json())["status"] == "running":
            assert time.monotonic() < deadline, f"consolidation did not finish: {record}"
            time.sleep(0.5)
        assert record["status"] == "succeeded", record
    with app_server.client("a_rw") as client:
        for _ in range(3):
            body = {"query": "when is the deploy window?", "filters": {"session_id": session}}
            assert client.post("/v1/search", json=body).status_code == 200
        ctx = client.post("/v1/context", json={"query": "deploy window", "token_budget": 256})
        assert ctx.status_code == 200

    # (series, labels it must carry, expected increase, exact?) -- summed over all replicas and workers
    expected: list[tuple[str, dict[str, str], float, bool]] = [
        (
            "ray_hybridmem_ingest_records_total",
            {"store": "postgres", "operation": "insert_episodes"},
            5,
            True,
        ),
        ("ray_hybridmem_ingest_records_total", {"store": "redis", "operation": "append_session"}, 5, True),
        ("ray_hybridmem_ingest_records_total", {"store": "qdrant", "operation": "upsert"}, 5, False),
        ("ray_hybridmem_consolidation_episodes_total", {}, 5, True),
        ("ray_hybridmem_consolidation_runs_total", {"outcome": "succeeded"}, 1, True),
        ("ray_hybridmem_retrieval_seconds_count", {"endpoint": "search"}, 3, True),
        ("ray_hybridmem_retrieval_seconds_count", {"endpoint": "context"}, 1, True),
        ("ray_hybridmem_retrieval_tier_seconds_count", {"tier": "semantic"}, 4, True),
        ("ray_hybridmem_retrieval_tier_seconds_count", {"tier": "working"}, 3, True),
        ("ray_hybridmem_retrieval_top_score_count", {}, 4, True),
        ("ray_hybridmem_context_tokens_used_count", {}, 1, True),
        ("ray_hybridmem_http_requests_total", {"route": "/v1/episodes/batch", "status": "201"}, 1, True),
        ("ray_hybridmem_http_requests_total", {"route": "/v1/search", "status": "200"}, 3, True),
        ("ray_hybridmem_embedding_texts_total", {}, 5, False),
        ("ray_hybridmem_embedding_cache_misses_total", {}, 5, False),
    ]

    def check(current: Samples) -> list[str]:
        missing = []
        for name, labels, amount, exact in expected:
            got = _total(current, name, **labels) - _total(before, name, **labels)
            if (got != amount) if exact else (got < amount):
                missing.append(f"{name}{labels} moved by {got}, expected {'' if exact else '>= '}{amount}")
        return missing

    samples = _wait_for(check, url)
    assert _total(samples, "ray_hybridmem_store_up", store="postgres") >= 1
    backlog = [v for (n, _), v in samples.items() if n == "ray_hybridmem_consolidation_backlog_episodes"]
    assert backlog, "the backlog gauge was never set"
    errors = _total(samples, "ray_hybridmem_store_errors_total") - _total(
        before, "ray_hybridmem_store_errors_total"
    )
    assert errors == 0


def test_ingress_serves_its_own_metrics(app_server: AppServer) -> None:
    with app_server.client("a_rw") as client:
        assert client.get("/v1/whoami").status_code == 200
    r = httpx.get(f"{app_server.base_url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert _total(samples, "hybridmem_http_requests_total", route="/v1/whoami", status="200") >= 1
    assert not any(name.startswith("ray_") for name, _ in samples)  # the app's own names, unprefixed
