"""Ray Serve process settings for hybridmem's request path, applied before a local Ray cluster starts.

Serve reads these environment variables when each of its processes starts (controller, proxy,
replicas) and, for deployment handles, when ``ray.serve`` is first imported; so they must be set
before that, in the environment of ``ray.init``/``ray start``/``serve run``. A value already set
wins. ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` is Serve's documented high-throughput mode:
replicas call each other over gRPC, user code and the router share the replica's event loop, and
request-path logs are buffered. On the 2-core benchmark machine it cut the CPU spent per
``/v1/context`` request, across all processes, from 79 to 62 ms (docs/deploy.md).

Three of its parts are turned back: direct ingress (each ingress replica would listen on a port of
its own, from 30000 up, and nothing on the configured HTTP port without HAProxy in front); the router
on the caller's event loop (a handle then works only inside a running loop, and only that one: the
consolidation job's Ray tasks and synchronous callers need the router's own loop); and the replica's
4 MiB gRPC receive limit, which an upsert of a large consolidation batch exceeds.

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

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

SERVE_ENV_DEFAULTS: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(512 * 1024 * 1024),
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "MALLOC_ARENA_MAX": "2",
}


def apply_serve_env_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each default that ``environ`` (default: this process's) lacks; returns the ones it set.

    ``HYBRIDMEM_SERVE_DEFAULT_TUNING=0`` leaves the environment (and so Serve's own defaults) alone.
    """
    env = os.environ if environ is None else environ
    if env.get("HYBRIDMEM_SERVE_DEFAULT_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    applied = {k: v for k, v in SERVE_ENV_DEFAULTS.items() if k not in env}
    env.update(applied)
    if applied and environ is None and "ray.serve._private.handle_options" in sys.modules:
        # Handle options take their transport from the environment when Serve is imported.
        log.warning(
            "Serve was imported before its tuning was applied: deployment handles built in this "
            "process keep Serve's default transport",
            extra={"applied": sorted(applied)},
        )
    return applied
