"""CPU per role for benchmarks: roles from process names and Ray titles, CPU from /proc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import cpu_by_role, role_of, snapshot

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)\n"


def test_roles_from_ray_titles_and_store_names() -> None:
    assert role_of("python", "ray::ServeReplica:hybridmem:Retriever") == "Retriever"
    assert role_of("python", "ray::ServeReplica:hybridmem:Embedder.handle_request") == "Embedder"
    assert role_of("python", "ray::ProxyActor") == "proxy"
    assert role_of("python", "ray::ServeController") == "controller"
    assert role_of("postgres", "postgres: 16/main: postgres hm_bench [local] idle") == "postgres"
    assert role_of("redis-server", "redis-server 127.0.0.1:6379") == "redis"
    assert role_of("valkey-server", "valkey-server *:0") == "redis"
    assert role_of("bash", "bash") is None


def test_cpu_is_counted_per_role_for_named_and_descendant_processes() -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        named = {burner.pid: "server"}
        before = snapshot(os.getpid(), named)
        assert before[burner.pid][0] == "server"
        assert before[sleeper.pid][0] == "ray"  # below the benchmark, no role of its own
        time.sleep(1.5)
        used = cpu_by_role(before, snapshot(os.getpid(), named))
    finally:
        for proc in (burner, sleeper):
            proc.kill()
            proc.wait()
    assert 0.3 <= used["server"] <= 1.6
    assert used["ray"] < 0.2


def test_serves_haproxy_ingress_counts_as_its_own_role(tmp_path: Path) -> None:
    """With RAY_SERVE_ENABLE_HA_PROXY=1 Serve's ingress is an haproxy process below the benchmark."""
    fake = tmp_path / "haproxy"
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        time.sleep(0.2)
        assert snapshot(os.getpid())[proc.pid][0] == "haproxy"
    finally:
        proc.kill()
        proc.wait()
