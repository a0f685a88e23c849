"""Run the whole app on a local Ray in this process (tests, benchmarks, examples)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(base_url: str, timeout_s: float = 180.0) -> None:
    """Poll /readyz until every store answers (or raise with the last answer)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=5)
            if r.status_code == 200 and r.json().get("status") == "ok":  # 200 also while degraded
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"app not ready after {timeout_s}s: {last}")


@contextlib.contextmanager
def local_app(
    settings: dict[str, Any],
    *,
    port: int | None = None,
    num_cpus: int = 6,
    deployment_options: dict[str, Any] | None = None,
    include_dashboard: bool = False,
) -> Iterator[str]:
    """Start Ray + Serve, deploy build_app(settings), yield the base URL, shut everything down after.

    ``deployment_options`` maps a deployment name to ``.options(...)`` overrides (e.g. autoscaling).
    """
    from deployments.serve_env import apply_serve_env_defaults, stop_leftover_haproxy

    apply_serve_env_defaults()  # before Ray or Serve is imported: handles take their transport then
    import ray
    from ray import serve

    from deployments.app import AppArgs, compose_app

    port = port or free_port()
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=include_dashboard,  # the dashboard also serves the Job Submission API
        namespace=f"hybridmem-{uuid.uuid4().hex[:6]}",
        log_to_driver=False,
    )
    try:
        # As serve_config.yaml (make run, serve deploy): replica logs as JSON objects, one per line.
        logging_config = {"encoding": "JSON", "log_level": "INFO"}
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=logging_config)
        serve.run(
            compose_app(AppArgs(settings=settings), deployment_options=deployment_options),
            name="hybridmem",
            route_prefix="/",
            logging_config=logging_config,
        )
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url)
        yield base_url
    finally:
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()
            stop_leftover_haproxy()
