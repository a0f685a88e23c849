"""Soak: a mixed load at a fixed rate for a fixed time, with the app's memory before, during and after.

Open loop on loopback: operations are started on a schedule (``rate`` per second) whatever the answers'
speed, in the mix of :data:`MIX` (single and batch episode writes, search, context). A request that would
exceed ``max_in_flight`` is skipped and counted. Latency is measured per operation from send to answer.

Memory is the resident set (RSS) of the app's Ray processes (Serve replicas, proxy, controller), read with
psutil when installed, else from /proc: descendants of this process when it started the app, else every
Serve process on this machine (``--url`` of an app on loopback). Sampled every ``sample_s``; ``growth``
compares the end with the state after warm-up, ``slope_mb_per_min`` fits a line through the samples (and
``slope_second_half_mb_per_min`` through the second half: warming caches level off, a leak does not).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.procs import descendants
from bench.retrieve import load_memories

TOPICS = ("flight", "hotel", "invoice", "birthday", "allergy", "meeting", "deadline", "refund", "budget")
MIX = (("write", 0.35), ("write_batch", 0.10), ("search", 0.30), ("context", 0.25))
Mix = Sequence[tuple[str, float]]
# "reads": the data stays fixed, so a process that keeps growing grows per request, not with the data.
MIXES: dict[str, Mix] = {"default": MIX, "reads": (("search", 0.5), ("context", 0.5))}
BATCH = 8
SERVE_TITLES = ("ray::ServeReplica:", "ray::ProxyActor", "ray::ServeController")


# ---- memory of the app's processes ---------------------------------------------------------------------


def _proc_table() -> list[tuple[int, int, str, int]]:
    """(pid, ppid, title, rss bytes) of every process, from psutil or /proc."""
    try:
        import psutil
    except ImportError:
        return _proc_table_linux()
    out = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "memory_info"]):
        cmd, mem = p.info["cmdline"], p.info["memory_info"]
        if cmd and mem is not None:
            out.append((p.info["pid"], p.info["ppid"], cmd[0], mem.rss))
    return out


def _proc_table_linux() -> list[tuple[int, int, str, int]]:
    page = os.sysconf("SC_PAGE_SIZE")
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss_pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.append((int(entry.name), int(stat[1]), cmd, rss_pages * page))
    return out


def _role(title: str) -> str | None:
    """``ServeReplica:hybridmem:Embedder`` / ``ProxyActor`` / ``ServeController`` (method suffix dropped)."""
    if not title.startswith(SERVE_TITLES):
        return None
    return title.removeprefix("ray::").split(".", 1)[0]


def _descendants(table: Sequence[tuple[int, int, str, int]], root_pid: int) -> set[int]:
    """Pids of every process below ``root_pid`` in a ``_proc_table()``."""
    return descendants([(pid, ppid) for pid, ppid, _, _ in table], root_pid)


def app_processes(root_pid: int | None) -> list[tuple[int, str, int]]:
    """(pid, role, RSS bytes) of the app's Serve processes: descendants of ``root_pid``, or all here."""
    table = _proc_table()
    allowed = None if root_pid is None else _descendants(table, root_pid)
    return [
        (pid, role, rss)
        for pid, _, title, rss in table
        if (role := _role(title)) is not None and (allowed is None or pid in allowed)
    ]


def app_memory(root_pid: int | None) -> dict[str, float]:
    """RSS in MB per role (several replicas of one deployment add up), and ``total``."""
    by_role: dict[str, float] = defaultdict(float)
    for _, role, rss in app_processes(root_pid):
        by_role[role] += rss / 2**20
    out = {k: round(v, 1) for k, v in sorted(by_role.items())}
    out["total"] = round(sum(by_role.values()), 1)
    return out


def slope_per_min(samples: Sequence[Sequence[float]]) -> float | None:
    """Least-squares slope (MB/min) of ``(seconds, MB)`` samples; None for fewer than 3 or no spread."""
    if len(samples) < 3:
        return None
    xs, ys = [t / 60 for t, _ in samples], [m for _, m in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 2) if var else None


# ---- load -------------------------------------------------------------------------------------------------


def _percentiles(lat: list[float]) -> dict[str, float | int]:
    if not lat:
        return {"count": 0}
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    return {
        "count": len(lat),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1),
    }


class _Soak:
    def __init__(self, client: httpx.AsyncClient, *, seed: int, max_in_flight: int, mix: Mix = MIX) -> None:
        self._client = client
        self._mix = mix
        self._rnd = random.Random(seed)
        self._gate = max_in_flight
        self.in_flight = 0
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.statuses: dict[str, int] = defaultdict(int)
        self.skipped = 0
        self._n = 0

    def _request(self, op: str) -> tuple[str, dict[str, Any]]:
        self._n += 1
        n, topic = self._n, self._rnd.choice(TOPICS)
        session = f"soak-{n % 64}"
        if op == "write":
            return "/v1/episodes", {
                "id": f"soak-{n}", "agent_id": "soak", "session_id": session,
                "content": f"Soak turn {n}: the user talked about the {topic}.",
            }  # fmt: skip
        if op == "write_batch":
            items = [
                {"id": f"soak-{n}.{i}", "agent_id": "soak", "session_id": session,
                 "content": f"Soak turn {n}.{i}: a note on the {topic}."}
                for i in range(BATCH)
            ]  # fmt: skip
            return "/v1/episodes/batch", {"episodes": items}
        query = f"what did user {self._rnd.randrange(500)} say about the {topic}?"
        if op == "search":
            return "/v1/search", {"query": query, "k": 10}
        return "/v1/context", {"query": query, "token_budget": 512}

    async def one(self, op: str) -> None:
        if self.in_flight >= self._gate:
            self.skipped += 1
            return
        path, body = self._request(op)
        self.in_flight += 1
        started = time.perf_counter()
        try:
            r = await self._client.post(path, json=body)
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        finally:
            self.in_flight -= 1
        self.latency[op].append(time.perf_counter() - started)
        self.statuses[status] += 1
        if not status.startswith("2"):
            self.errors[op] += 1

    def pick(self) -> str:
        return self._rnd.choices([op for op, _ in self._mix], weights=[w for _, w in self._mix])[0]


async def _drive(
    base_url: str, key: str, *, duration: float, rate: float, warmup: float, sample_s: float,
    max_in_flight: int, root_pid: int | None, progress: bool, mix: Mix = MIX,
) -> dict[str, Any]:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, limits=limits) as client:
        warm = _Soak(client, seed=1, max_in_flight=max_in_flight, mix=mix)
        await _schedule(warm, rate=rate, seconds=warmup)
        before = app_memory(root_pid)
        soak = _Soak(client, seed=7, max_in_flight=max_in_flight, mix=mix)
        samples: list[tuple[float, float]] = [(0.0, before["total"])]
        by_role: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for role, mb in before.items():
            by_role[role].append((0.0, mb))
        started = time.perf_counter()

        async def sampler() -> None:
            while True:
                await asyncio.sleep(sample_s)
                elapsed = time.perf_counter() - started
                mem = await asyncio.to_thread(app_memory, root_pid)
                samples.append((round(elapsed, 1), mem["total"]))
                for role, mb in mem.items():
                    by_role[role].append((round(elapsed, 1), mb))
                if progress:
                    done = sum(len(v) for v in soak.latency.values())
                    print(f"  {elapsed:5.0f}s  {done} requests  {sum(soak.errors.values())} errors  "
                          f"app RSS {mem['total']:.0f} MB", flush=True)  # fmt: skip

        sampling = asyncio.create_task(sampler())
        try:
            await _schedule(soak, rate=rate, seconds=duration)
        finally:
            sampling.cancel()
        elapsed = time.perf_counter() - started
        after = app_memory(root_pid)
        consolidation = await _consolidation_summary(client)
    samples.append((round(elapsed, 1), after["total"]))
    for role, mb in after.items():
        by_role[role].append((round(elapsed, 1), mb))
    every = [x for lat in soak.latency.values() for x in lat]
    growth = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in sorted(set(before) | set(after))}
    return {
        "duration_s": round(elapsed, 1),
        "rate_target": rate,
        "rate_achieved": round(len(every) / elapsed, 2),
        "mix": dict(mix),
        "requests": len(every),
        "errors": sum(soak.errors.values()),
        "errors_by_op": dict(soak.errors),
        "statuses": dict(soak.statuses),
        "skipped_over_in_flight_cap": soak.skipped,
        "latency": {
            "overall": _percentiles(every),
            **{op: _percentiles(v) for op, v in soak.latency.items()},
        },
        "consolidation": consolidation,
        "memory_mb": {
            "scope": "descendants of this process" if root_pid is not None else "all Serve processes here",
            "before": before,
            "after": after,
            "growth": growth,
            "growth_pct": round(100 * growth["total"] / before["total"], 1) if before["total"] else None,
            "slope_mb_per_min": slope_per_min(samples),
            # a warming cache flattens out, a leak does not: compare the halves
            "slope_second_half_mb_per_min": slope_per_min([s for s in samples if s[0] >= elapsed / 2]),
            "samples": samples,
            # which process keeps growing, if any: each role's slope over the second half
            "slope_second_half_by_role": {
                role: slope_per_min([x for x in series if x[0] >= elapsed / 2])
                for role, series in sorted(by_role.items())
                if role != "total"
            },
            "samples_by_role": {role: series for role, series in sorted(by_role.items()) if role != "total"},
        },
    }


async def _consolidation_summary(client: httpx.AsyncClient) -> dict[str, Any]:
    """What the scheduled consolidation runs did during the soak (from the admin API)."""
    resp = await client.get("/v1/admin/consolidations", params={"limit": 200})
    if resp.status_code != 200:
        return {"error": f"HTTP {resp.status_code}"}
    runs = resp.json()
    statuses: dict[str, int] = defaultdict(int)
    for run in runs:
        statuses[run["status"]] += 1

    def total(key: str) -> int:
        return sum(int(c.get(key, 0)) for run in runs for c in run["counts"].values())

    return {"runs": len(runs), "statuses": dict(statuses), "episodes": total("episodes")}


async def _schedule(soak: _Soak, *, rate: float, seconds: float) -> None:
    """Start one operation every 1/rate seconds (open loop) for ``seconds``; wait for the stragglers."""
    interval, t0 = 1.0 / rate, time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    n = 0
    while (due := t0 + n * interval) < t0 + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(soak.one(soak.pick()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)


def run(
    *,
    duration: float = 300.0,
    rate: float = 20.0,
    memories: int = 1000,
    warmup: float = 20.0,
    sample_s: float = 10.0,
    max_in_flight: int = 64,
    url: str | None = None,
    key: str | None = None,
    progress: bool = True,
    consolidate_every: float = 60.0,
    mix: str = "default",
) -> dict[str, Any]:
    """Preload ``memories`` (so the semantic tier is live), warm up, then soak for ``duration`` seconds.

    The local app consolidates every ``consolidate_every`` seconds, like a deployed one (0: never), so
    the soak includes draining, embedding and HNSW builds of the semantic tier. ``mix="reads"`` sends
    searches and contexts only, over the preloaded memories.
    """
    if mix not in MIXES:
        raise ValueError(f"mix: one of {sorted(MIXES)}, not {mix!r}")

    async def body(base: str, k: str, root_pid: int | None) -> dict[str, Any]:
        if memories:
            await load_memories(base, k, memories, progress=False)
        return await _drive(
            base, k, duration=duration, rate=rate, warmup=warmup, sample_s=sample_s,
            max_in_flight=max_in_flight, root_pid=root_pid, progress=progress, mix=MIXES[mix],
        )  # fmt: skip

    if url and key:
        result = asyncio.run(body(url, key, None))
    else:
        from bench.env import bench_app

        scheduled = {"enabled": consolidate_every > 0, "interval_s": consolidate_every or 60.0}
        with bench_app({"consolidation": scheduled}) as app:
            result = asyncio.run(body(app.base_url, app.key, os.getpid()))
    return {
        "name": "soak",
        "memories": memories,
        "warmup_s": warmup,
        "consolidate_every_s": consolidate_every if not (url and key) else None,
        "mix_name": mix,
        **result,
    }
