"""Alembic migrations: upgrade to head, downgrade to base (every table gone), upgrade again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import migrate

pytestmark = pytest.mark.integration

TABLES = {
    "episodes",
    "transcripts",
    "consolidation_runs",
    "consolidation_checkpoints",
    "memory_records",
    "episodes_archive",
}


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


@pytest.fixture
async def empty_database(postgres_admin_dsn: str) -> AsyncIterator[str]:
    from tests.conftest import _dsn_for_database

    name = f"hm_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _dsn_for_database(postgres_admin_dsn, name)
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    dsn = empty_database
    assert await migrate.current(dsn) is None

    await migrate.upgrade(dsn)
    assert await migrate.current(dsn) == migrate.head_revision()
    assert await _tables(dsn) >= TABLES

    await migrate.upgrade(dsn)  # idempotent
    assert await migrate.current(dsn) == migrate.head_revision()

    await migrate.downgrade(dsn, "base")
    assert await migrate.current(dsn) is None
    assert not (TABLES & await _tables(dsn))

    await migrate.upgrade(dsn, "head")
    assert await _tables(dsn) >= TABLES


async def test_sqlalchemy_style_dsn_is_accepted(empty_database: str) -> None:
    sa_dsn = empty_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    await migrate.upgrade(sa_dsn)
    assert await migrate.current(empty_database) == migrate.head_revision()


async def test_generated_tsv_column_indexes_content(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn:
        tsv = await conn.fetchval("SELECT to_tsvector('english'::regconfig, 'Budgets were approved')::text")
        assert "budget" in tsv
        gen = await conn.fetchval(
            "SELECT is_generated FROM information_schema.columns "
            "WHERE table_name = 'episodes' AND column_name = 'tsv'"
        )
        assert gen == "ALWAYS"


async def test_unreachable_database_raises_store_unavailable() -> None:
    from core.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        await migrate.current("postgresql://postgres@127.0.0.1:1/postgres", timeout_s=2)
    with pytest.raises(StoreUnavailable):
        await migrate.upgrade("postgresql://postgres@127.0.0.1:1/postgres")
