"""Alembic migrations of the episodic tier's Postgres schema (run through :mod:`core.migrate`)."""
