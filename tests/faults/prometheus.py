"""A real Prometheus (Debian's ``prometheus`` package) scraping the app, with the shipped alert rules loaded,
and the queries of the shipped Grafana dashboard and alert rules in the form they are evaluated in.

Prometheus scrapes Ray's metrics export port (every replica's ``ray_hybridmem_*`` and Serve's
``ray_serve_*``, as ``ops/prometheus/prometheus.yml``'s ``ray`` job does through Ray's service
discovery file) and the ingress's ``/metrics`` every 5 s (Ray exports every 10 s), and evaluates
``ops/prometheus/alerts.yml`` every 5 s.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import stop_process

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "hybridmem.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
HOW_TO_GET = "apt-get install prometheus (Debian's package; .ci/run installs it)"
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval: at least 4 scrape intervals (and 2 Ray exports)


def binary() -> str | None:
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana's interval variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s")
            out.append((str(panel.get("title")), expr))
    return out


_COMPARISON = re.compile(r"(?<=\s)(==|!=|>=|<=|>|<)\s+(?=[-0-9.(])")


def as_bool(expr: str) -> str:
    """An alert expression with each comparison against a threshold in its ``bool`` form: instead of
    keeping only the series past the threshold, every series the alert looks at comes back as 0 or 1,
    so the result holds data whenever the alert's inputs exist, firing or not."""
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", " ".join(expr.split()))


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"] if "alert" in r]


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=30).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=30).json()
        active: list[dict[str, Any]] = body["data"]["activeTargets"]
        return active


@contextlib.contextmanager
def running(workdir: Path, *, ray_metrics: str, app: str) -> Iterator[Prometheus]:
    """Prometheus scraping ``ray_metrics`` and ``app`` (``host:port``) every 5 s."""
    exe = binary()
    if exe is None:
        raise RuntimeError(f"prometheus not found: {HOW_TO_GET}")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ALERTS, workdir / "alerts.yml")
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": "ray", "static_configs": [{"targets": [ray_metrics]}]},
            {"job_name": "hybridmem", "metrics_path": "/metrics", "static_configs": [{"targets": [app]}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield Prometheus(url, proc)
    finally:
        stop_process(proc)
        log.close()
