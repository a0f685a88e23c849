"""Alembic environment: runs migrations over an asyncpg connection (no sync driver needed).

The DSN comes from ``config.attributes["dsn"]`` (set by :mod:`core.migrate`); asyncpg parses it itself,
so unix-socket DSNs such as ``postgresql://postgres:@/postgres?host=/tmp/pg`` work unchanged.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def _do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async_migrations(dsn: str) -> None:
    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, timeout=10)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=connect, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run them against a database")
asyncio.run(_run_async_migrations(context.config.attributes["dsn"]))
