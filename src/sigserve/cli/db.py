"""`sigserve db upgrade|current`: the keys and usage database's schema (Alembic migrations shipped
inside sigserve). `sigserve serve` upgrades at start unless --no-database-migrate; fleets that
prefer one deliberate step run `sigserve db upgrade` before rolling out a new version."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from sigserve.cli.common import fail
from sigserve.cli.keys import DatabaseUrl, DataDir
from sigserve.errors import SigserveError
from sigserve.server.settings import Settings

db_app = typer.Typer(help="The keys and usage database: schema migrations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


def _database(data_dir, database_url):
    from sigserve.accounts.db import Database

    given: dict[str, Any] = {k: v for k, v in (("data_dir", data_dir), ("database_url", database_url)) if v is not None}
    settings = Settings(**given)
    return Database(settings.resolved_database_url, timeout_s=settings.database_timeout_s)


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[Optional[str], typer.Argument(help="Target revision (default: the newest).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Bring the schema up to date, keeping the data (safe to run on a live fleet and to repeat)."""
    from sigserve.accounts import migrate

    database = _database(data_dir, database_url)
    try:
        before, after = migrate.upgrade(database, revision or "head")
    except SigserveError as exc:
        fail(exc)
    finally:
        database.dispose()
    typer.echo(f"schema at {after}" + (f" (was {before or 'empty or pre-migration'})" if before != after else
                                       " (already up to date)"))


@db_app.command("current")
def current(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Print the database's schema revision and the newest this sigserve knows."""
    from sigserve.accounts import migrate

    database = _database(data_dir, database_url)
    try:
        found = migrate.current(database)
    except SigserveError as exc:
        fail(exc)
    finally:
        database.dispose()
    newest = migrate.head()
    typer.echo(f"database: {found or 'none'}; newest: {newest}" +
               ("" if found == newest else "  -> run `sigserve db upgrade`"))
