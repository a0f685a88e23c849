"""Neighbour-context full-text column for BM25: each turn's terms plus its session neighbours'.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE episodes ADD COLUMN IF NOT EXISTS ctx_tsv tsvector")
    op.execute("CREATE INDEX IF NOT EXISTS ix_episodes_ctx_tsv ON episodes USING gin (ctx_tsv)")
    op.execute("ALTER TABLE episodes_archive ADD COLUMN IF NOT EXISTS ctx_tsv tsvector")


def downgrade() -> None:
    op.execute("ALTER TABLE episodes_archive DROP COLUMN IF EXISTS ctx_tsv")
    op.execute("DROP INDEX IF EXISTS ix_episodes_ctx_tsv")
    op.execute("ALTER TABLE episodes DROP COLUMN IF EXISTS ctx_tsv")
