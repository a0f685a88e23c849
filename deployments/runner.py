"""``hybridmem run``: start what is missing (embedded Valkey/Postgres), migrate, then serve the config.

Embedded servers are started only for stores with no configured URL, and stopped on exit. The Serve app
is exactly serve_config.yaml (host/port overridable); replicas inherit the resolved settings through the
environment of the local Ray cluster that ``serve run`` starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core import migrate
from core.auth import new_api_key
from core.settings import ALL_SCOPES, ApiKeySpec, load_settings
from deployments.embedded_servers import EmbeddedServers
from deployments.serve_env import apply_serve_env_defaults, stop_leftover_haproxy

log = logging.getLogger(__name__)

DEV_TENANT = "dev"
# Seconds ``serve run`` gets after SIGINT, SIGTERM and SIGKILL before the next (see _stop_serve).
STOP_GRACE_S = (20.0, 10.0, 10.0)


def _dev_key(data_dir: Path) -> str:
    """A persistent dev key (created once, mode 600) so clients keep working across restarts."""
    path = data_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    key = new_api_key()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _derived_config(config: Path, host: str, port: int, data_dir: Path) -> Path:
    """serve_config.yaml with only http_options host/port replaced (when they differ)."""
    doc: dict[str, Any] = yaml.safe_load(config.read_text())
    http = doc.setdefault("http_options", {})
    if http.get("host") == host and http.get("port") == port:
        return config
    http.update({"host": host, "port": port})
    out = data_dir / "serve_config.run.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def run(config: Path, host: str, port: int) -> int:
    """Serve until Ctrl-C or SIGTERM, then stop everything this started (see :func:`_stop_serve`)."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    settings = load_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["HYBRIDMEM_DATA_DIR"] = str(data_dir)
    servers = EmbeddedServers(data_dir)
    need_redis, need_pg = not settings.redis.url, not settings.postgres.dsn
    embedded = need_redis or need_pg
    try:
        if embedded:
            print(f"starting embedded servers in {data_dir} (redis: {need_redis}, postgres: {need_pg})")
            servers.start(redis=need_redis, postgres=need_pg)
            if servers.redis_url:
                os.environ["HYBRIDMEM_REDIS__URL"] = servers.redis_url
            if servers.postgres_dsn:
                os.environ["HYBRIDMEM_POSTGRES__DSN"] = servers.postgres_dsn
        settings = load_settings()
        if not settings.postgres.dsn:
            raise SystemExit("error: no Postgres DSN (set HYBRIDMEM_POSTGRES__DSN)")
        print("applying database migrations ...")
        asyncio.run(migrate.upgrade(settings.postgres.dsn))
        if embedded and settings.env == "dev" and not settings.auth.api_keys:
            key = _dev_key(data_dir)
            spec = ApiKeySpec(
                key_sha256=ApiKeySpec.hash_key(key), tenant_id=DEV_TENANT, scopes=list(ALL_SCOPES), name="dev"
            )
            os.environ["HYBRIDMEM_AUTH__API_KEYS"] = json.dumps([spec.model_dump()])
            print(f"dev API key (tenant {DEV_TENANT!r}, all scopes): {key}")
            print(f"  try: curl -H 'Authorization: Bearer {key}' http://{host}:{port}/readyz")
        serve_bin = shutil.which("serve", path=str(Path(sys.executable).parent)) or "serve"
        cfg = _derived_config(config, host, port, data_dir)
        print(f"serving {config} on http://{host}:{port} (Ctrl-C to stop)")
        env = os.environ.copy()
        apply_serve_env_defaults(env)
        proc = subprocess.Popen([serve_bin, "run", str(cfg)], env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            print("stopping (Ctrl-C again to force) ...", flush=True)
            return _stop_serve(proc)
        finally:
            stop_leftover_haproxy(env)
    finally:
        servers.stop()


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_serve(proc: subprocess.Popen[bytes]) -> int:
    """Stop ``serve run`` and the local Ray it started: SIGINT (it shuts Serve and Ray down), then SIGTERM,
    then SIGKILL, each after ``STOP_GRACE_S``; a second Ctrl-C skips straight to SIGKILL. Ray's node
    processes share the fate of the ``serve run`` process that started them."""
    steps = (
        (signal.SIGINT, STOP_GRACE_S[0]),
        (signal.SIGTERM, STOP_GRACE_S[1]),
        (signal.SIGKILL, STOP_GRACE_S[2]),
    )
    for sig, grace_s in steps:
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("serve run still running %.0f s after %s", grace_s, signal.Signals(sig).name)
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
    return proc.returncode if proc.returncode is not None else 1
