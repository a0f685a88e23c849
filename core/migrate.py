"""Programmatic Alembic: upgrade, downgrade and inspect the episodic schema without an alembic.ini.

The CLI calls these as ``hybridmem migrate upgrade|downgrade|current``. Alembic itself is synchronous and
its env.py runs its own event loop, so each command runs in a worker thread (safe to await from any loop).
Any ``postgresql://`` / ``postgres://`` DSN asyncpg accepts works, unix-socket query forms included.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from core.errors import StoreUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SCHEME_PREFIXES = ("postgresql+asyncpg://", "postgres+asyncpg://")


def normalize_dsn(dsn: str) -> str:
    """The asyncpg form of a DSN: SQLAlchemy-style ``postgresql+asyncpg://`` becomes ``postgresql://``."""
    for prefix in _SCHEME_PREFIXES:
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn


def alembic_config(dsn: str) -> Config:
    """An Alembic config pointing at the packaged migrations, carrying the DSN to env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["dsn"] = normalize_dsn(dsn)
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this package."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def _run(fn_name: str, dsn: str, revision: str) -> None:
    cfg = alembic_config(dsn)
    fn = getattr(command, fn_name)
    try:
        await asyncio.to_thread(fn, cfg, revision)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailable("postgres", f"migration {fn_name} failed: {exc}") from exc
    logger.info("migrations %s to %s done", fn_name, revision)


async def upgrade(dsn: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (idempotent)."""
    await _run("upgrade", dsn, revision)


async def downgrade(dsn: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``"base"`` drops every hybridmem table)."""
    await _run("downgrade", dsn, revision)


async def current(dsn: str, *, timeout_s: float = 10.0) -> str | None:
    """The revision the database is at (None: never migrated)."""
    try:
        conn = await asyncpg.connect(normalize_dsn(dsn), timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailable("postgres", str(exc)) from exc
    try:
        exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL", timeout=timeout_s)
        if not exists:
            return None
        rev = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1", timeout=timeout_s)
        return str(rev) if rev is not None else None
    finally:
        await conn.close(timeout=timeout_s)
