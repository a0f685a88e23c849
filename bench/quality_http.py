"""Quality benchmarks through the product's own API: ingest over HTTP, consolidate, search over HTTP."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx

from core.ids import deterministic_id

MODES = ("hybrid", "vector", "lexical")


def shown_path(path: os.PathLike[str] | str) -> str:
    """A data path as results record it: relative to the working directory (no machine paths)."""
    return os.path.relpath(os.fspath(path))


def parse_modes(modes: str | Sequence[str] | None) -> list[str]:
    if modes is None:
        return list(MODES)
    items = modes.split(",") if isinstance(modes, str) else list(modes)
    bad = [m for m in items if m not in MODES]
    if bad:
        raise ValueError(f"unknown modes {bad}; expected {list(MODES)}")
    return items


def post_batches(client: httpx.Client, items: list[dict[str, Any]], *, batch: int = 500) -> None:
    for i in range(0, len(items), batch):
        r = client.post("/v1/episodes/batch", json={"episodes": items[i : i + batch]})
        r.raise_for_status()


def consolidate(client: httpx.Client, *, timeout_s: float = 3600.0, progress: bool = True) -> dict[str, Any]:
    """POST /v1/admin/consolidations and poll the run until it ends; raise if it failed."""
    r = client.post("/v1/admin/consolidations", json={})
    r.raise_for_status()
    run_id = r.json()["id"]
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        run = client.get(f"/v1/admin/consolidations/{run_id}").json()
        status = run.get("status")
        line = f"  consolidation {run_id}: {status} {run.get('counts', {})}"
        if progress and line != last:
            print(line, flush=True)
            last = line
        if status in ("succeeded", "failed", "partial"):
            if status == "failed":
                raise RuntimeError(f"consolidation failed: {run.get('errors')}")
            return dict(run)
        time.sleep(1.0)
    raise TimeoutError(f"consolidation {run_id} did not finish in {timeout_s}s")


def ranked_sources(hits: Iterable[dict[str, Any]], id_map: dict[str, str]) -> list[str]:
    """Benchmark ids of the hits, best first; summaries are not turns and are skipped."""
    out: list[str] = []
    for hit in hits:
        if (hit.get("metadata") or {}).get("record_type") == "summary":
            continue
        for sid in hit.get("source_ids") or []:
            bid = id_map.get(sid)
            if bid is not None and bid not in out:
                out.append(bid)
    return out


def search_ids(
    client: httpx.Client, query: str, *, mode: str, k: int, id_map: dict[str, str], filters: dict[str, Any]
) -> list[str]:
    r = client.post("/v1/search", json={"query": query[:4096], "k": k, "mode": mode, "filters": filters})
    r.raise_for_status()
    return ranked_sources(r.json()["hits"], id_map)


def episode_uuid(tenant: str, client_id: str) -> str:
    """The id the service gives an episode stored with client id ``client_id`` (idempotency contract)."""
    return str(deterministic_id(tenant, "episode", client_id))


def progress_every(n: int, total: int, label: str) -> Callable[[int], None]:
    def report(i: int) -> None:
        if i % n == 0 or i == total:
            print(f"  {label}: {i}/{total}", flush=True)

    return report


def against_app(
    body: Callable[[str, str, str], dict[str, Any]], *, url: str | None, key: str | None
) -> dict[str, Any]:
    """``body(base_url, api_key, tenant)`` against the app at ``url`` with ``key``, or, without them,
    against a fresh local app started for the run (bench.env.bench_app)."""
    if url and key:
        who = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {key}"})
        who.raise_for_status()
        return body(url, key, who.json()["tenant_id"])
    from bench.env import bench_app

    with bench_app() as app:
        return body(app.base_url, app.key, app.tenant)
