"""Alembic migrations of the keys and usage database (run by sigserve.accounts.migrate)."""
