"""Initial episodic schema: episodes, transcripts, consolidation runs/checkpoints, memory records, archive.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_EPISODE_COLUMNS = """
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    agent_id text NOT NULL,
    session_id text NOT NULL,
    partition integer NOT NULL,
    role text NOT NULL,
    kind text NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    content_hash text NOT NULL,
    consolidated_at timestamptz,
    consolidation_run_id uuid,
    transcript_id uuid,
    ingested_at timestamptz NOT NULL DEFAULT now()
"""

_UPGRADE = [
    f"""
    CREATE TABLE episodes (
        {_EPISODE_COLUMNS},
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED
    )
    """,
    "CREATE INDEX ix_episodes_tenant_session_created ON episodes (tenant_id, session_id, created_at, id)",
    "CREATE INDEX ix_episodes_tenant_created ON episodes (tenant_id, created_at, id)",
    """CREATE INDEX ix_episodes_unconsolidated ON episodes (partition, created_at, id)
       WHERE consolidated_at IS NULL""",
    "CREATE INDEX ix_episodes_tenant_session_hash ON episodes (tenant_id, session_id, content_hash)",
    "CREATE INDEX ix_episodes_transcript ON episodes (transcript_id) WHERE transcript_id IS NOT NULL",
    "CREATE INDEX ix_episodes_tsv ON episodes USING gin (tsv)",
    """
    CREATE TABLE transcripts (
        id uuid PRIMARY KEY,
        tenant_id text NOT NULL,
        agent_id text NOT NULL,
        session_id text NOT NULL,
        title text NOT NULL DEFAULT '',
        participants text[] NOT NULL DEFAULT '{}',
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        turns jsonb NOT NULL DEFAULT '[]'::jsonb,
        episode_ids uuid[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX ix_transcripts_tenant_session ON transcripts (tenant_id, session_id, created_at)",
    """
    CREATE TABLE consolidation_runs (
        id uuid PRIMARY KEY,
        status text NOT NULL,
        partitions integer[] NOT NULL DEFAULT '{}',
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        counts jsonb NOT NULL DEFAULT '{}'::jsonb,
        errors jsonb NOT NULL DEFAULT '[]'::jsonb,
        trigger text NOT NULL DEFAULT 'manual'
    )
    """,
    "CREATE INDEX ix_consolidation_runs_started ON consolidation_runs (started_at DESC)",
    """
    CREATE TABLE consolidation_checkpoints (
        partition integer PRIMARY KEY,
        last_created_at timestamptz,
        last_episode_id uuid,
        run_id uuid,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE memory_records (
        id uuid PRIMARY KEY,
        tenant_id text NOT NULL,
        agent_id text NOT NULL,
        session_id text,
        kind text NOT NULL,
        content text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        source_ids text[] NOT NULL DEFAULT '{}',
        model_version text,
        content_hash text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED
    )
    """,
    "CREATE INDEX ix_memory_records_tenant_created ON memory_records (tenant_id, created_at, id)",
    "CREATE INDEX ix_memory_records_tenant_agent ON memory_records (tenant_id, agent_id, created_at, id)",
    "CREATE INDEX ix_memory_records_source_ids ON memory_records USING gin (source_ids)",
    "CREATE INDEX ix_memory_records_tsv ON memory_records USING gin (tsv)",
    # The archive keeps tsv as a plain column so `INSERT ... SELECT e.*, now() FROM episodes e` works.
    f"""
    CREATE TABLE episodes_archive (
        {_EPISODE_COLUMNS},
        tsv tsvector,
        archived_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ix_episodes_archive_tenant_session ON episodes_archive (tenant_id, session_id, created_at)",
]

_TABLES = (
    "episodes_archive",
    "memory_records",
    "consolidation_checkpoints",
    "consolidation_runs",
    "transcripts",
    "episodes",
)


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
