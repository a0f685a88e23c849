"""A power cut: every process of `hybridmem run` killed at once (SIGKILL, as a power cut does) during
ingest and a consolidation run, then `hybridmem run` again on the same data directory.

The app runs as a user runs it, with the embedded Postgres and Valkey it starts in its data directory
and the embedded vector engine. After the restart: every acknowledged write is there with the content
that was sent, nothing is stored twice, the run cut short stays on record, a new consolidation run
succeeds, and every acknowledged record is found in the semantic tier by its own text, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from deployments.local import free_port
from deployments.runner import _dev_key
from tests.faults import report
from tests.serve.test_front_door_stop import _start, _started_by, _wait_ready

pytestmark = [pytest.mark.faults, pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(900)]

INGEST_BEFORE_CUT_S = 8.0
SESSIONS = 3


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Writer:
    """Writes episodes (single and batched) and memories until stopped; keeps what was acknowledged."""

    def __init__(self, base_url: str, key: str) -> None:
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        self.acked: dict[str, tuple[str, str, str]] = {}  # id -> (kind, session, content)
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            session = f"pc-{n % SESSIONS}"
            items = [
                (f"pc-{n}-{i}", f"Power cut note {n}.{i}: the {session} crate went to dock {n % 7}.")
                for i in range(3)
            ]
            try:
                if n % 3 == 2:
                    key, text = f"pc-m-{n}", f"Fact {n}: the forklift in bay {n % 5} needs a new battery."
                    self.sent += 1
                    r = self.client.post("/v1/memories", json={"id": key, "agent_id": "pc", "content": text})
                    if r.status_code == 201:
                        self.acked[r.json()["id"]] = ("memory", "", text)
                    continue
                body = {
                    "episodes": [
                        {"id": k, "agent_id": "pc", "session_id": session, "content": t} for k, t in items
                    ]
                }
                self.sent += len(items)
                r = self.client.post("/v1/episodes/batch", json=body)
                if r.status_code == 201:
                    for eid, (_k, text) in zip(r.json()["ids"], items, strict=True):
                        self.acked[eid] = ("episode", session, text)
            except httpx.HTTPError:
                return  # the cut: what got no answer was never acknowledged


def _kill_everything(proc: Any, data_dir: Path) -> int:
    """SIGKILL, at once, every process the run started: the app, Ray, the embedded Postgres and Valkey."""
    victims = {p.pid: p for p in _started_by(proc, data_dir)}
    victims[proc.pid] = psutil.Process(proc.pid)
    victims.pop(os.getpid(), None)
    for p in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(victims.values()), timeout=30)
    proc.wait(timeout=30)
    return len(victims)


def _listed(c: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated listing."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = c.get(path, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        out += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def _consolidate(c: httpx.Client) -> dict[str, Any]:
    """A new run to the end (after the run the restarted scheduler resumed, which holds the run lock)."""
    deadline = time.monotonic() + 300
    run = c.post("/v1/admin/consolidations", json={})
    while run.status_code == 409 and time.monotonic() < deadline:
        time.sleep(1)
        run = c.post("/v1/admin/consolidations", json={})
    assert run.status_code == 202, run.text
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rec: dict[str, Any] = c.get(f"/v1/admin/consolidations/{run.json()['id']}").json()
        if rec["status"] not in ("running", "starting"):
            return rec
        time.sleep(1)
    raise AssertionError("consolidation did not finish")


def test_power_cut_during_ingest_and_consolidation(tmp_path: Path) -> None:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    proc = _start(data_dir, port, log)
    writer: Writer | None = None
    try:
        _wait_ready(proc, port, log)
        key = _dev_key(data_dir)
        writer = Writer(base, key)
        thread = threading.Thread(target=writer.run, daemon=True)
        thread.start()
        time.sleep(INGEST_BEFORE_CUT_S / 2)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            cut_run = c.post("/v1/admin/consolidations", json={}).json()["id"]
        time.sleep(INGEST_BEFORE_CUT_S / 2)
        cut = time.monotonic()
        killed = _kill_everything(proc, data_dir)
        writer.stop.set()
        thread.join(timeout=30)
    finally:
        if proc.poll() is None:
            _kill_everything(proc, data_dir)

    # The same data directory, started again.
    proc = _start(data_dir, port, log)
    try:
        _wait_ready(proc, port, log)
        back_s = time.monotonic() - cut
        acked = writer.acked
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            lost = 0
            for rid, (kind, _session, text) in acked.items():
                r = c.get(f"/v1/{'memories' if kind == 'memory' else 'episodes'}/{rid}")
                lost += r.status_code != 200 or _digest(r.json()["content"]) != _digest(text)
            episodes = [e for s in range(SESSIONS) for e in _listed(c, "/v1/episodes", session_id=f"pc-{s}")]
            memories = _listed(c, "/v1/memories", agent_id="pc")
            copies = Counter(_digest(r["content"]) for r in [*episodes, *memories])
            duplicated = sum(n - 1 for n in copies.values() if n > 1)
            done = _consolidate(c)
            cut_record = c.get(f"/v1/admin/consolidations/{cut_run}").json()
            # Every acknowledged record is found in the semantic tier by its own text, exactly once.
            missing_points = twice = 0
            for rid, (kind, session, text) in acked.items():
                filters = {"session_id": session} if kind == "episode" else {"agent_id": "pc"}
                body = {"query": text, "k": 5, "mode": "vector", "tiers": ["semantic"], "filters": filters,
                        "diversify": False}  # fmt: skip
                hits = c.post("/v1/search", json=body).json()["hits"]
                own = [h for h in hits if h["source_ids"][:1] == [rid]]
                missing_points += not own
                twice += sum(1 for h in hits if _digest(h["content"]) == _digest(text)) > 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)

    report.record(
        "power cut",
        {
            "requests": writer.sent,
            "writes": writer.sent,
            "acknowledged": len(acked),
            "failed": writer.sent - len(acked),
        },
        recovery_s=round(back_s, 1),
        note=f"{killed} processes killed at once; the run cut short was resumed on restart: "
        f"{cut_record['status']}; the next run {done['status']}",
    )
    report.settle("power cut", lost=lost + missing_points, duplicated=duplicated + twice)
    assert acked, "nothing was acknowledged before the cut"
    assert (lost, duplicated) == (0, 0), (lost, duplicated)
    assert (missing_points, twice) == (0, 0), (missing_points, twice)
    assert done["status"] == "succeeded", done
    assert cut_record["status"] == "succeeded", cut_record  # resumed by the new scheduler
