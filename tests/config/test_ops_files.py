"""The Grafana dashboard and Prometheus rules only name metrics the app exports, with labels they carry."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.metrics import METRICS, MetricKind

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops/grafana/hybridmem.json"
ALERTS = ROOT / "ops/prometheus/alerts.yml"
ALERT_TESTS = ROOT / "ops/prometheus/alerts_test.yml"
PROMETHEUS = ROOT / "ops/prometheus/prometheus.yml"
RUNBOOKS = ROOT / "docs/runbooks.md"
OBSERVABILITY = ROOT / "docs/observability.md"

# Labels Ray adds to every application series on its endpoint.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId", "instance", "job"}
# Serve's own metrics (Ray 2.60, names as exported), with their tags; checked against ray/serve sources.
SERVE_BUILTINS: dict[str, set[str]] = {
    "ray_serve_deployment_replica_healthy": {"deployment", "replica", "application"},
    "ray_serve_autoscaling_target_replicas": {"deployment", "application"},
    "ray_serve_deployment_queued_queries": {"deployment", "application", "handle", "actor_id"},
    "ray_serve_num_http_requests_total": {"route", "method", "application", "status_code"},
    "ray_serve_deployment_processing_latency_ms_bucket": {
        "deployment",
        "replica",
        "application",
        "route",
        "le",
    },
}
REQUIRED_ALERTS = {
    "HybridmemConsolidationBacklogGrowing",
    "HybridmemConsolidationFailing",
    "HybridmemEmbeddingCacheHitRateLow",
    "HybridmemRetrievalLatencyP95High",
    "HybridmemStoreUnreachable",
    "HybridmemEmbedderQueueSaturated",
}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
}


def _exported() -> dict[str, set[str]]:
    """Every series name on Ray's endpoint for the declared metrics, with the labels it carries."""
    out: dict[str, set[str]] = {}
    for metric in METRICS.all():
        spec, labels = metric.spec, set(metric.spec.labels) | RAY_LABELS
        if spec.kind is MetricKind.HISTOGRAM:
            out[spec.ray_name + "_bucket"] = labels | {"le"}
            out[spec.ray_name + "_sum"] = labels
            out[spec.ray_name + "_count"] = labels
        else:
            out[spec.ray_name] = labels
    for name, labels in SERVE_BUILTINS.items():
        out[name] = labels | RAY_LABELS
    return out


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))
    return out


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _check_expr(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """Problems of one PromQL expression: unknown series names, unknown labels in selectors and by()."""
    problems = []
    names = set(re.findall(r"\b((?:ray_|hybridmem_)[a-zA-Z0-9_]+)\b", expr))
    if not names:
        problems.append(f"names no hybridmem/ray metric: {expr}")
    for name in names:
        if name not in exported:
            problems.append(f"unknown metric {name}")
    known_labels = set().union(*(exported.get(n, set()) for n in names)) if names else set()
    for name, selector in re.findall(r"\b((?:ray_|hybridmem_)[a-zA-Z0-9_]+)\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
            if label not in exported.get(name, set()):
                problems.append(f"{name} has no label {label!r}")
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in filter(None, (s.strip() for s in group.split(","))):
            if label not in known_labels:
                problems.append(f"by ({label}) is no label of {sorted(names)}")
    return problems


def test_dashboard_is_a_grafana_dashboard() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] == "hybridmem" and dash["schemaVersion"] >= 30
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
    panels = [p for p in _panels(dash["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dash["panels"])}) == len(_panels(dash["panels"]))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_dashboard_queries_name_only_exported_metrics() -> None:
    exported = _exported()
    problems = [p for expr in _dashboard_exprs() for p in _check_expr(expr, exported)]
    assert problems == []


def test_dashboard_shows_every_declared_metric_and_the_required_views() -> None:
    text = " ".join(_dashboard_exprs())
    for metric in METRICS.all():
        assert metric.spec.ray_name in text, f"{metric.spec.name} is on no panel"
    per_tier = "sum by (le, tier) (rate(ray_hybridmem_retrieval_tier_seconds_bucket"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, {per_tier}" in text
    assert "ray_serve_deployment_replica_healthy" in text  # embedder replicas


def test_alert_rules_parse_and_name_only_exported_metrics() -> None:
    rules = _alert_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    exported = _exported()
    runbook_anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert _check_expr(rule["expr"], exported) == [], rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in runbook_anchors, f"{rule['alert']}: no runbook section #{anchor}"


def test_unprefixed_names_are_what_the_app_serves() -> None:
    """The same rules work on the ingress's /metrics once the ray_ prefix is dropped."""
    app_names = {m.spec.name for m in METRICS.all()}
    for expr in [r["expr"] for r in _alert_rules()] + _dashboard_exprs():
        for name in re.findall(r"\bray_(hybridmem_[a-z0-9_]+)", expr):
            assert re.sub(r"_(bucket|sum|count)$", "", name) in app_names


def test_prometheus_config_scrapes_ray_and_the_app() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ray"]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert jobs["hybridmem"]["metrics_path"] == "/metrics"


def test_observability_doc_lists_every_metric() -> None:
    doc = OBSERVABILITY.read_text()
    for metric in METRICS.all():
        assert f"`{metric.spec.name}`" in doc, metric.spec.name


PROMTOOL = shutil.which("promtool")


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(PROMETHEUS)],
        ["test", "rules", str(ALERT_TESTS)],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    if PROMTOOL is None:  # CI installs it (.ci/run); elsewhere say how to get it
        message = "promtool not installed: apt-get install prometheus (Debian's package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
