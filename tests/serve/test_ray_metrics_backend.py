"""install_ray_metrics publishes core.metrics through Ray: values reach Ray's endpoint as ray_hybridmem_*."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import metrics as m
from core.metrics import METRICS
from deployments.metrics_backend import RayMetricsBackend, install_ray_metrics, serve_request_id

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def ray_metrics_url() -> Iterator[str]:
    import ray

    assert install_ray_metrics() is False  # no Ray here yet: stays on the local registry
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"metrics_report_interval_ms": 500},
    )
    try:
        node = ray._private.worker.global_worker.node
        yield f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    finally:
        m.use_backend(None)
        ray.shutdown()


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and wanted <= lbl)


def _local(name: str, **labels: str) -> float:
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(m.render_latest().decode())
        for s in family.samples
    }
    return _value(samples, name, **labels)


def test_values_reach_rays_endpoint_with_the_ray_prefix(ray_metrics_url: str) -> None:
    assert install_ray_metrics() is True
    assert isinstance(m.current_backend(), RayMetricsBackend)
    assert install_ray_metrics() is True  # idempotent
    local_before = _local("hybridmem_ingest_records_total", store="postgres", operation="insert_episodes")
    METRICS.ingest_records_total.inc(3, store="postgres", operation="insert_episodes")
    METRICS.ingest_records_total.inc(2, store="postgres", operation="insert_episodes")
    METRICS.retrieval_tier_seconds.observe(0.02, tier="semantic")
    METRICS.retrieval_tier_seconds.observe(3.0, tier="semantic")
    METRICS.consolidation_backlog_episodes.set(7, partition=3)
    expected = {
        ("ray_hybridmem_ingest_records_total", (("store", "postgres"), ("operation", "insert_episodes"))): 5,
        ("ray_hybridmem_retrieval_tier_seconds_count", (("tier", "semantic"),)): 2,
        ("ray_hybridmem_retrieval_tier_seconds_bucket", (("tier", "semantic"), ("le", "0.025"))): 1,
        ("ray_hybridmem_consolidation_backlog_episodes", (("partition", "3"),)): 7,
    }
    deadline = time.monotonic() + 60
    while True:
        samples = _samples(ray_metrics_url)
        got = {key: _value(samples, key[0], **dict(key[1])) for key in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == expected
    # the local registry still holds this process's values (what the ingress's /metrics serves)
    assert (
        _local("hybridmem_ingest_records_total", store="postgres", operation="insert_episodes")
        == local_before + 5
    )


def test_serve_request_id_is_none_outside_a_request() -> None:
    assert serve_request_id() is None
