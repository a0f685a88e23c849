"""`hybridmem run` stops on one Ctrl-C (SIGINT to its process group, as a terminal sends) or SIGTERM, and
leaves nothing behind: Serve, Ray, HAProxy and the embedded Valkey and Postgres it started. The next run
opens the same data directory cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.local import free_port

pytestmark = [pytest.mark.serve, pytest.mark.slow]

READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0  # issue 23: everything gone within 30 s of one Ctrl-C


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDMEM_")}
    env |= {"HYBRIDMEM_DATA_DIR": str(data_dir), "HYBRIDMEM_ENV": "dev"}

    def as_a_terminal_starts_it() -> None:
        # A job started from a script may inherit SIGINT ignored; a terminal's foreground job does not.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=as_a_terminal_starts_it,
    )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"hybridmem run exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
            if ready.status_code == 200 and ready.json()["status"] == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"not ready within {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _started_by(proc: subprocess.Popen[bytes], data_dir: Path) -> list[psutil.Process]:
    """Every process the run started: its descendants, and the embedded servers (Postgres daemonises,
    so it is found by its data directory)."""
    found = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
    for p in psutil.process_iter(["cmdline"]):
        if str(data_dir) in " ".join(p.info["cmdline"] or []):
            found[p.pid] = p
    return list(found.values())


def _stop_and_check(proc: subprocess.Popen[bytes], data_dir: Path, sig: signal.Signals, log: Path) -> float:
    started = _started_by(proc, data_dir)
    names = {p.pid: " ".join(p.cmdline()[:2])[:80] for p in started if p.is_running()}
    assert any("serve" in n for n in names.values()), names
    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=STOP_TIMEOUT_S + 60)
    _gone, alive = psutil.wait_procs(started, timeout=max(0.1, STOP_TIMEOUT_S - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    left = [f"{p.pid} {names.get(p.pid, '?')}" for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running {took:.0f} s after {sig.name}: {left}\n{log.read_text()[-2000:]}"
    assert took <= STOP_TIMEOUT_S, f"stopping took {took:.0f} s"
    return took


def test_ctrl_c_then_sigterm_stop_everything_and_the_data_dir_reopens(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "run.log"
    for sig in (signal.SIGINT, signal.SIGTERM):
        port = free_port()
        proc = _start(data_dir, port, log)
        try:
            _wait_ready(proc, port, log)  # the second round: the same data directory, reopened
            key = (data_dir / "dev-api-key").read_text().strip()
            stored = httpx.post(
                f"http://127.0.0.1:{port}/v1/episodes",
                json={
                    "agent_id": "a",
                    "session_id": f"s-{sig.name}",
                    "content": f"written before {sig.name}",
                },
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert stored.status_code == 201, stored.text
            if sig is signal.SIGTERM:  # what the first run wrote is still there
                page = httpx.get(
                    f"http://127.0.0.1:{port}/v1/episodes",
                    params={"session_id": "s-SIGINT"},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                assert [e["content"] for e in page.json()["items"]] == ["written before SIGINT"]
            _stop_and_check(proc, data_dir, sig, log)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
