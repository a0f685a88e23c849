"""Memories that are stored but not indexed (``MemoryIn.index = false``).

Such a memory is durable, readable and listed, but has no vector and no lexical entry: no search
finds it (LangGraph's ``index=False`` items, say). Every existing row stays indexed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE memory_records ADD COLUMN IF NOT EXISTS indexed boolean NOT NULL DEFAULT true")


def downgrade() -> None:
    op.execute("ALTER TABLE memory_records DROP COLUMN IF EXISTS indexed")
