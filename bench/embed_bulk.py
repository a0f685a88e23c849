"""Query latency beside bulk work on the Serve Embedder (``query_under_bulk`` of ``hybridmem bench embed``).

One-text queries over Serve HTTP while clients post consolidation-sized requests back to back: what a
query meets while consolidation embeds through the same replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

BULK_REQUEST_TEXTS = 512  # texts per bulk request (a consolidation batch)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _queries_under_bulk(
    url: str, bulk: list[str], probes: list[str], *, seconds: float, bulk_clients: int, bulk_texts: int
) -> dict[str, Any]:
    """One-text queries every 100 ms while ``bulk_clients`` post bulk requests back to back.

    What a query meets while consolidation embeds through the same replica. With no bulk clients it
    gives the idle baseline. Query latencies are measured end to end over Serve HTTP.
    """
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    bulk_done = 0

    async def bulk_client(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal bulk_done
        i = offset
        while time.perf_counter() < deadline:
            chunk = [bulk[(i + j) % len(bulk)] for j in range(bulk_texts)]
            i += bulk_texts
            (await client.post(url, json={"texts": chunk})).raise_for_status()
            bulk_done += len(chunk)

    async def prober(client: httpx.AsyncClient) -> None:
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            (await client.post(url, json={"texts": [probes[i % len(probes)]]})).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(
            prober(client), *(bulk_client(client, k * bulk_texts) for k in range(bulk_clients))
        )
        elapsed = time.perf_counter() - started
    return {
        "queries": len(latencies),
        "p50_ms": _pct(latencies, 0.5),
        "p95_ms": _pct(latencies, 0.95),
        "max_ms": round(max(latencies), 1),
        "bulk_sent_per_s": round(bulk_done / elapsed, 1),
    }


def queries_under_bulk(
    url: str,
    bulk: list[str],
    probes: list[str],
    *,
    seconds: float = 20.0,
    bulk_texts: int = BULK_REQUEST_TEXTS,
) -> dict[str, Any]:
    """Query latency on an idle replica, then beside two bulk clients (see :func:`_queries_under_bulk`)."""
    idle = asyncio.run(
        _queries_under_bulk(
            url, bulk, probes[::2], seconds=seconds / 2, bulk_clients=0, bulk_texts=bulk_texts
        )
    )
    busy = asyncio.run(
        _queries_under_bulk(url, bulk, probes[1::2], seconds=seconds, bulk_clients=2, bulk_texts=bulk_texts)
    )
    del idle["bulk_sent_per_s"]
    return {"idle": idle, "under_bulk": busy, "bulk_request_texts": bulk_texts}
