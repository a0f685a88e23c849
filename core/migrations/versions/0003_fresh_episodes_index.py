"""Partial full-text index over the episodes consolidation has not reached yet.

With lexical search in the semantic engine, Postgres answers lexically only for these (acknowledged,
not yet in the engine): a bounded index, whatever the size of the log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_episodes_fresh_tsv ON episodes USING gin (tsv) "
        "WHERE consolidated_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_episodes_fresh_tsv")
