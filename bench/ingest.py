"""Durable ingest throughput over HTTP: batched POST /v1/episodes/batch, acknowledged = in Postgres."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


async def drive_ingest(
    base_url: str,
    key: str,
    *,
    episodes: int,
    batch: int,
    clients: int,
    sessions: int = 64,
    id_prefix: str = "ing",
) -> dict[str, Any]:
    """Send ``episodes`` in batches from ``clients`` concurrent connections; count acks and errors."""
    start_ts = datetime(2024, 1, 1, tzinfo=UTC)
    batches = [
        [
            {
                "id": f"{id_prefix}-{i}",
                "agent_id": "bench-agent",
                "session_id": f"sess-{i % sessions}",
                "role": "user" if i % 2 else "assistant",
                "content": f"Episode {i}: the user mentioned item {i % 997} and asked about order {i % 313}.",
                "metadata": {"n": i},
                "created_at": (start_ts + timedelta(seconds=i)).isoformat(),
            }
            for i in range(b, min(b + batch, episodes))
        ]
        for b in range(0, episodes, batch)
    ]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    acked = errors = 0
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal acked, errors
        while not queue.empty():
            item = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/episodes/batch", json={"episodes": item})
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code == 201:
                acked += len(item)
            else:
                errors += 1

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "episodes": episodes,
        "batch": batch,
        "clients": clients,
        "acknowledged": acked,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "episodes_per_s": round(acked / elapsed, 1),
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "batch_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1) if latencies else None,
    }


def run(
    *,
    episodes: int = 50_000,
    batch: int = 500,
    clients: int = 4,
    url: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Benchmark against ``url`` (a running app) or a fresh local app; verifies durability in Postgres."""
    if url and key:
        return asyncio.run(drive_ingest(url, key, episodes=episodes, batch=batch, clients=clients))
    from bench.env import bench_app

    with bench_app() as app:
        # warm-up: connections, code paths
        asyncio.run(
            drive_ingest(
                app.base_url, app.key, episodes=min(2_000, episodes), batch=batch, clients=2, id_prefix="warm"
            )
        )
        result = asyncio.run(
            drive_ingest(app.base_url, app.key, episodes=episodes, batch=batch, clients=clients)
        )
        result["durable_in_postgres"] = _count_rows(app.settings["postgres"]["dsn"], app.tenant)
    result["name"] = "ingest"
    return result


def _count_rows(dsn: str, tenant: str) -> int:
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM episodes WHERE tenant_id = $1", tenant)
            return n
        finally:
            await conn.close()

    return asyncio.run(count())
