"""Supersedes and validity: what replaced an episode or memory, and when a memory holds.

``superseded_by`` / ``superseded_at`` on episodes (and their archive) and memories: the write that
declared it replaces the row, and from when (that write's event time). ``valid_from`` / ``valid_to`` on
memories (and their versions): the interval the memory holds in. Search and context leave out what is
superseded or expired at the asked time; the rows stay stored and auditable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_SUPERSEDED = ("superseded_by uuid", "superseded_at timestamptz")
_VALIDITY = ("valid_from timestamptz", "valid_to timestamptz")


def _add(table: str, columns: tuple[str, ...]) -> None:
    op.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN IF NOT EXISTS {c}" for c in columns))


def upgrade() -> None:
    for table in ("episodes", "episodes_archive"):
        _add(table, _SUPERSEDED)
    _add("memory_records", _SUPERSEDED + _VALIDITY)
    _add("memory_versions", _VALIDITY)


def downgrade() -> None:
    for table, columns in (
        ("episodes", _SUPERSEDED),
        ("episodes_archive", _SUPERSEDED),
        ("memory_records", _SUPERSEDED + _VALIDITY),
        ("memory_versions", _VALIDITY),
    ):
        names = ", ".join(f"DROP COLUMN IF EXISTS {c.split()[0]}" for c in columns)
        op.execute(f"ALTER TABLE {table} {names}")
