"""CPU time of the processes that serve a benchmark, per role, read from /proc (Linux).

Roles: each Serve deployment by name (``Retriever``, ``Embedder``, ...), ``proxy`` (Serve's proxy actor),
``haproxy`` (Serve's HAProxy ingress, when ``RAY_SERVE_ENABLE_HA_PROXY=1``), ``controller``, ``ray``
(every other process below the benchmark: raylet, GCS, idle workers, agents), ``postgres`` and ``redis``
(every such server process on this machine: the stores the app uses, started by it or not) and any
process named explicitly (a single-process server, say). The load generator itself is not counted.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_STORES = {"postgres": "postgres", "redis-server": "redis", "valkey-server": "redis"}
_BELOW = {"haproxy": "haproxy"}  # roles known by process name among the benchmark's own processes


def _stat(pid: int) -> tuple[int, str, str, float] | None:
    """(ppid, comm, title, CPU seconds so far) of a live process, None once it is gone."""
    base = Path("/proc") / str(pid)
    try:
        raw = (base / "stat").read_text()
        title = (base / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of stat (state): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), comm, title, (int(fields[11]) + int(fields[12])) * _TICK_S


def role_of(comm: str, title: str) -> str | None:
    """The role a process plays, from its name and Ray's process title; None when not a known role."""
    if comm in _STORES:
        return _STORES[comm]
    name = title.removeprefix("ray::")
    if name.startswith("ServeReplica:"):
        return name.split(":")[-1].split(".", 1)[0]
    if name.startswith("ProxyActor"):
        return "proxy"
    if name.startswith("ServeController"):
        return "controller"
    return None


def descendants(parents: Iterable[tuple[int, int]], root_pid: int) -> set[int]:
    """Pids of every process below ``root_pid``, from (pid, parent pid) pairs."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parents:
        children[ppid].append(pid)
    found, stack = set(), [root_pid]
    while stack:
        for child in children[stack.pop()]:
            found.add(child)
            stack.append(child)
    return found


def stop(proc: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """Terminate a child process; kill it when it has not exited within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def snapshot(root_pid: int, named: Mapping[int, str] | None = None) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds) for the stores, the processes below ``root_pid`` and ``named`` ones."""
    table: dict[int, tuple[int, str, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = st
    below = descendants([(pid, st[0]) for pid, st in table.items()], root_pid)
    out: dict[int, tuple[str, float]] = {}
    for pid, (_ppid, comm, title, cpu) in table.items():
        role = (named or {}).get(pid) or role_of(comm, title)
        if role is None and pid in below:
            role = _BELOW.get(comm, "ray")
        if role is not None:
            out[pid] = (role, cpu)
    return out


def cpu_by_role(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each role used between two snapshots (a process started in between counts whole)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (role, cpu) in after.items():
        used[role] += cpu - before.get(pid, (role, 0.0))[1]
    return dict(used)
