"""`sigserve keys create|list|revoke` and `sigserve usage`: manage API keys and read usage.

They work on the same database as the server (`--database-url`, else the SQLite file in
`--data-dir`), so keys can be created, changed or revoked while the server runs; a change reaches
running servers within their --key-refresh-s (1 s), or at once when SIGSERVE_REDIS_URL is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sigserve.accounts.keys import KeyRecord, KeyStore
from sigserve.accounts.usage import UsageMeter
from sigserve.cli.common import fail
from sigserve.errors import SigserveError
from sigserve.server.settings import Settings, env_var

# The server's own settings say where the database is (same flags, same SIGSERVE_* variables).
_FIELDS = Settings.model_fields
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", show_default=False,
    help=f"{_FIELDS['data_dir'].description} [env: {env_var('data_dir')}]")]
DatabaseUrl = Annotated[Optional[str], typer.Option(
    "--database-url", show_default=False,
    help=f"{_FIELDS['database_url'].description} Overrides --data-dir. [env: {env_var('database_url')}]")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.command("usage", help="Usage per key: requests, images, patches, tokens, cost.")(usage)


def _store(data_dir: Path | None, database_url: str | None) -> KeyStore:
    from sigserve.accounts.shared import KeyEvents

    given: dict[str, Any] = {k: v for k, v in (("data_dir", data_dir), ("database_url", database_url)) if v is not None}
    settings = Settings(**given)
    # With SIGSERVE_REDIS_URL set, running replicas hear of a change at once (else within their refresh).
    events = KeyEvents(settings.redis_url) if settings.redis_url else None
    return KeyStore(settings.resolved_database_url, timeout_s=settings.database_timeout_s,
                    migrate=settings.database_migrate, events=events)


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def _key_json(record: KeyRecord) -> dict:
    return {"id": record.id, "name": record.name, "prefix": record.display_prefix,
            "admin": record.admin, "rpm": record.rpm, "images_per_min": record.images_per_min,
            "quota_images": record.quota_images, "created_at": record.created_at,
            "revoked_at": record.revoked_at}


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="A label for the key (who uses it).")],
    rpm: Annotated[Optional[int], typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    images_per_min: Annotated[Optional[int], typer.Option(
        "--images-per-min", min=1, help="Images per minute.")] = None,
    quota_images: Annotated[Optional[int], typer.Option(
        "--quota-images", min=0, help="Images this key may embed in total.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="May read every key's usage.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it. It is shown this once: only a hash is stored."""
    store = _store(data_dir, database_url)
    try:
        record, plaintext = store.create(name, rpm=rpm, images_per_min=images_per_min,
                                         quota_images=quota_images, admin=admin)
    except SigserveError as exc:
        fail(exc)
    finally:
        store.close()
    typer.echo(plaintext)
    typer.echo(f"Created key {record.id} ({record.name}). Store it now: it cannot be shown "
               "again.", err=True)


@keys_app.command("list")
def list_keys(data_dir: DataDir = None, database_url: DatabaseUrl = None,
              as_json: AsJson = False) -> None:
    """List keys (ids, names, limits, status); never the keys themselves."""
    store = _store(data_dir, database_url)
    try:
        records = store.list()
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([_key_json(r) for r in records], indent=2))
        return
    if not records:
        typer.echo("No keys: the server accepts anyone (unless it has --api-key).")
        return
    rows = [[r.id, r.name, "admin" if r.admin else "", _limit(r.rpm), _limit(r.images_per_min),
             _limit(r.quota_images), "active" if r.active else "revoked"] for r in records]
    typer.echo(_table(["ID", "NAME", "ROLE", "RPM", "IMG/MIN", "QUOTA", "STATUS"], rows))


@keys_app.command("update")
def update(
    key: Annotated[str, typer.Argument(help="Key id (as listed).")],
    name: Annotated[Optional[str], typer.Option("--name", help="A new label.")] = None,
    rpm: Annotated[Optional[int], typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    images_per_min: Annotated[Optional[int], typer.Option(
        "--images-per-min", min=1, help="Images per minute.")] = None,
    quota_images: Annotated[Optional[int], typer.Option(
        "--quota-images", min=0, help="Images this key may embed in total.")] = None,
    unset: Annotated[Optional[list[str]], typer.Option(
        "--unset", help="Remove a limit: rpm, images_per_min or quota_images (repeatable).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a key's name or limits; running servers apply it within --key-refresh-s (at once with Redis)."""
    from sigserve.accounts.keys import LIMIT_FIELDS

    changes: dict[str, Any] = {k: v for k, v in (("name", name), ("rpm", rpm), ("images_per_min", images_per_min),
                                                 ("quota_images", quota_images)) if v is not None}
    for field in unset or []:
        if field.replace("-", "_") not in LIMIT_FIELDS:
            fail(f"--unset takes one of {', '.join(LIMIT_FIELDS)}, not {field!r}")
        changes[field.replace("-", "_")] = None
    if not changes:
        fail("nothing to change: give --name, a limit, or --unset")
    store = _store(data_dir, database_url)
    try:
        record = store.update(key, **changes)
    except SigserveError as exc:
        fail(exc)
    finally:
        store.close()
    if record is None:
        typer.echo(f"No key with id {key!r}.", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_key_json(record)))


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="Key id (as listed) or name.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key by id, or the active keys with that name."""
    store = _store(data_dir, database_url)
    try:
        revoked = store.revoke(key)
    finally:
        store.close()
    if not revoked:
        typer.echo(f"No active key with id or name {key!r}.", err=True)
        raise typer.Exit(1)
    for record in revoked:
        typer.echo(f"Revoked {record.id} ({record.name}).")


def usage(
    key: Annotated[Optional[str], typer.Option("--key", help="Only this key (id or name).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of daily detail.")] = 30,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Print usage per key; with --key, also its daily breakdown."""
    store = _store(data_dir, database_url)
    try:
        entries = UsageMeter(store).usage_all(days=days)
        names = {r.id: r for r in store.list()}
    finally:
        store.close()
    if key is not None:
        entries = [e for e in entries if key in (e["key_id"], getattr(names.get(e["key_id"]),
                                                                      "name", None))]
        if not entries:
            typer.echo(f"No key with id or name {key!r}.", err=True)
            raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    typer.echo(_usage_table(entries, names))
    if key is not None:
        for entry in entries:
            typer.echo(f"\nDaily usage of {entry['key_id']} (UTC, last {days} days):")
            typer.echo(_daily_table(entry["daily"]) if entry["daily"] else "(none)")


def _usage_table(entries: list[dict], names: dict[str, KeyRecord]) -> str:
    rows = []
    for e in entries:
        t, record = e["totals"], names.get(e["key_id"])
        quota = record.quota_images if record else None
        rows.append([e["key_id"], record.name if record else e["key_id"], str(t["requests"]),
                     str(t["images"]), str(t["patches"]), str(t["text_tokens"]),
                     f"{t['cost']:.4f}", _limit(quota)])
    return _table(["ID", "NAME", "REQUESTS", "IMAGES", "PATCHES", "TEXT TOKENS", "COST",
                   "QUOTA"], rows)


def _daily_table(daily: list[dict]) -> str:
    rows = [[d["date"], str(d["requests"]), str(d["images"]), str(d["patches"]),
             str(d["text_tokens"]), f"{d['cost']:.4f}"] for d in daily]
    return _table(["DATE", "REQUESTS", "IMAGES", "PATCHES", "TEXT TOKENS", "COST"], rows)
