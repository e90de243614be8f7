"""Alembic's entry point. sigserve.accounts.migrate hands it an open connection (under a lock, so
replicas starting together migrate once); run by hand, `alembic -c <this folder>/alembic.ini` is
not needed: use `sigserve db upgrade`."""

from __future__ import annotations

from alembic import context

from sigserve.accounts.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite ALTERs need batch mode
with context.begin_transaction():
    context.run_migrations()
