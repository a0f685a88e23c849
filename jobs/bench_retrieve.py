"""Retrieval latency under load: N memories loaded through the API, then C clients on /v1/context."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import httpx

_TOPICS = [
    "flight",
    "hotel",
    "invoice",
    "birthday",
    "allergy",
    "meeting",
    "deadline",
    "password reset",
    "refund",
    "vacation",
    "doctor",
    "car rental",
    "gym",
    "recipe",
    "budget",
    "project alpha",
]
_VERBS = ["prefers", "asked about", "cancelled", "scheduled", "complained about", "forgot", "paid for"]


def memory_text(i: int) -> str:
    rnd = random.Random(i)
    return (
        f"User {i % 500} {rnd.choice(_VERBS)} the {rnd.choice(_TOPICS)} on day {i % 365} "
        f"(note {i}, priority {rnd.randint(1, 5)})."
    )


_RETRIES = 8


async def _post_with_retries(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], stats: dict[str, int]
) -> None:
    """POST an idempotent write (every memory has an id), replaying it on 5xx or a dropped connection.

    The embedded vector store pauses while it builds HNSW for a large collection (qdrant-edge holds the
    GIL), so a batch can outlive the Ingress's request timeout (504); replaying it is what a client does.
    """
    for attempt in range(_RETRIES):
        try:
            r = await client.post(path, json=body)
        except httpx.TransportError:
            if attempt == _RETRIES - 1:
                raise
        else:
            if r.status_code < 500:
                r.raise_for_status()
                return
            if attempt == _RETRIES - 1:
                r.raise_for_status()
        stats["retries"] += 1
        await asyncio.sleep(min(2.0**attempt, 15.0))


async def settle(base_url: str, key: str, *, max_s: float = 600.0) -> float:
    """Wait until vector searches answer undegraded and quickly three times in a row (the store has
    finished the index builds the load queued); returns the seconds waited."""
    t0 = time.perf_counter()
    good = 0
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as c:
        while good < 3 and time.perf_counter() - t0 < max_s:
            s0 = time.perf_counter()
            try:
                r = await c.post("/v1/search", json={"query": "settle probe", "mode": "vector", "k": 1})
                ok = r.status_code == 200 and not r.json().get("degraded") and time.perf_counter() - s0 < 1.0
            except httpx.HTTPError:
                ok = False
            good = good + 1 if ok else 0
            await asyncio.sleep(0.5 if ok else 2.0)
    return time.perf_counter() - t0


async def load_memories(
    base_url: str,
    key: str,
    n: int,
    *,
    batch: int = 256,
    clients: int = 4,
    progress: bool = True,
    stats: dict[str, int] | None = None,
) -> float:
    """Upsert ``n`` memories (embedded + indexed); returns memories/s."""
    stats = stats if stats is not None else {"retries": 0}
    stats.setdefault("retries", 0)
    headers = {"Authorization": f"Bearer {key}"}
    starts = list(range(0, n, batch))
    done = 0
    t0 = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while starts:
            b = starts.pop()
            items = [
                {
                    "id": f"mem-{i}",
                    "agent_id": f"agent-{i % 8}",
                    "session_id": f"s-{i % 200}",
                    "content": memory_text(i),
                }
                for i in range(b, min(b + batch, n))
            ]
            await _post_with_retries(client, "/v1/memories/batch", {"memories": items}, stats)
            before, done = done, done + len(items)
            if progress and (done * 20 // n > before * 20 // n or done == n):  # every 5%
                print(f"  loaded {done}/{n} memories ({done / (time.perf_counter() - t0):.0f}/s)", flush=True)

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return n / (time.perf_counter() - t0)


async def drive_queries(
    base_url: str, key: str, *, clients: int, seconds: float, endpoint: str = "/v1/context", seed: int = 7
) -> dict[str, Any]:
    rnd = random.Random(seed)
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            q = f"what did user {rnd.randrange(500)} say about the {rnd.choice(_TOPICS)}?"
            body: dict[str, Any] = (
                {"query": q, "token_budget": 256} if endpoint == "/v1/context" else {"query": q}
            )
            t0 = time.perf_counter()
            try:
                r = await client.post(endpoint, json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += 0 if ok else 1

    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    return {
        "requests": len(lat),
        "errors": errors,
        "qps": round(len(lat) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
    }


def run(
    *,
    memories: int = 10_000,
    clients: int = 16,
    seconds: float = 30.0,
    endpoint: str = "/v1/context",
    url: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    async def body(base: str, k: str) -> dict[str, Any]:
        stats = {"retries": 0}
        load_rate = await load_memories(base, k, memories, stats=stats)
        settle_s = await settle(base, k)
        print(f"  store settled after {settle_s:.0f} s; measuring", flush=True)
        await drive_queries(base, k, clients=4, seconds=3)  # warm-up
        out = await drive_queries(base, k, clients=clients, seconds=seconds, endpoint=endpoint)
        out.update(
            {
                "memories": memories,
                "clients": clients,
                "endpoint": endpoint,
                "load_memories_per_s": round(load_rate, 1),
                "load_retries": stats["retries"],
                "settle_s": round(settle_s, 1),
            }
        )
        return out

    if url and key:
        result = asyncio.run(body(url, key))
    else:
        from jobs.bench_env import bench_app

        with bench_app() as app:
            result = asyncio.run(body(app.base_url, app.key))
    result["name"] = "retrieve"
    return result
