"""Memory history: every API write of a memory (create, update, delete) as a numbered version.

``memory_versions`` keeps each state a memory was written in, with when and by which API key, in the
same transaction as the write; a delete is recorded as a last version holding what was deleted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS memory_versions (
            tenant_id text NOT NULL,
            memory_id uuid NOT NULL,
            version integer NOT NULL,
            op text NOT NULL CHECK (op IN ('create', 'update', 'delete')),
            agent_id text NOT NULL,
            session_id text,
            kind text NOT NULL,
            content text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            source_ids text[] NOT NULL DEFAULT '{}',
            indexed boolean NOT NULL DEFAULT true,
            changed_at timestamptz NOT NULL,
            changed_by text,
            PRIMARY KEY (tenant_id, memory_id, version)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS memory_versions")
