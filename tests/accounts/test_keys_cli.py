"""`sigserve keys ...` and `sigserve usage` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sigserve.accounts.keys import KeyStore
from sigserve.accounts.usage import UsageMeter
from sigserve.cli import keys as keys_cli


@pytest.fixture
def app():
    root = typer.Typer()
    root.command("noop")(lambda: None)  # a second command keeps typer from flattening groups
    keys_cli.register(root)
    return root


@pytest.fixture
def run(app, tmp_path, monkeypatch):
    monkeypatch.setenv("SIGSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SIGSERVE_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args))
    return invoke


def _store(tmp_path) -> KeyStore:
    return KeyStore(f"sqlite:///{tmp_path / 'data' / 'sigserve.db'}")


def test_create_prints_a_working_key_once(run, tmp_path):
    result = run("keys", "create", "--name", "alice", "--rpm", "60", "--images-per-min", "100",
                 "--quota-images", "5000")
    assert result.exit_code == 0, result.output
    plaintext = result.stdout.strip()
    assert plaintext.startswith("sk-sig-") and "\n" not in plaintext
    store = _store(tmp_path)
    record = store.authenticate(plaintext)
    assert record and (record.name, record.rpm, record.images_per_min, record.quota_images) == (
        "alice", 60, 100, 5000)
    listed = run("keys", "list")
    assert record.id in listed.stdout and "alice" in listed.stdout
    assert plaintext not in listed.stdout and plaintext.rsplit("-", 1)[1] not in listed.stdout
    store.close()


def test_create_admin_and_list_json(run):
    run("keys", "create", "--name", "root", "--admin")
    run("keys", "create", "--name", "bob")
    rows = json.loads(run("keys", "list", "--json").stdout)
    assert [(r["name"], r["admin"], r["revoked_at"]) for r in rows] == [
        ("root", True, None), ("bob", False, None)]


def test_invalid_limit_is_rejected(run):
    result = run("keys", "create", "--name", "x", "--rpm", "0")
    assert result.exit_code != 0


def test_revoke_by_name_and_id(run, tmp_path):
    key_a = run("keys", "create", "--name", "a").stdout.strip()
    key_b = run("keys", "create", "--name", "b").stdout.strip()
    assert run("keys", "revoke", "a").exit_code == 0
    key_b_id = key_b.split("-")[2]
    assert run("keys", "revoke", key_b_id).exit_code == 0
    store = _store(tmp_path)
    assert store.authenticate(key_a) is None and store.authenticate(key_b) is None
    store.close()
    missing = run("keys", "revoke", "a")  # nothing active left by that name
    assert missing.exit_code == 1
    assert "revoked" in run("keys", "list").stdout


def test_usage_table_and_filter(run, tmp_path):
    key = run("keys", "create", "--name", "alice").stdout.strip()
    run("keys", "create", "--name", "bob")
    store = _store(tmp_path)
    alice = store.authenticate(key)
    UsageMeter(store, price_per_1k_images=1.0).record(alice.id, images=12, patches=3072,
                                                      text_tokens=7)
    store.close()
    table = run("usage")
    assert table.exit_code == 0
    line = next(row for row in table.stdout.splitlines() if row.startswith(alice.id))
    assert line.split()[1:7] == ["alice", "1", "12", "3072", "7", "0.0120"]
    assert "bob" in table.stdout
    only = run("usage", "--key", "alice")
    assert "bob" not in only.stdout and "Daily usage" in only.stdout
    data = json.loads(run("usage", "--key", alice.id, "--json").stdout)
    assert data[0]["totals"]["images"] == 12
    assert run("usage", "--key", "nobody").exit_code == 1


def test_database_url_option_wins(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    key = run("keys", "create", "--name", "x", "--database-url", url).stdout.strip()
    store = KeyStore(url)
    assert store.authenticate(key) is not None
    store.close()
    assert "No keys" in run("keys", "list").stdout  # the data-dir database is untouched


def test_registered_in_the_root_cli(tmp_path, monkeypatch):
    from sigserve.cli import COMMAND_MODULES, build_app

    assert "keys" in COMMAND_MODULES
    monkeypatch.setenv("SIGSERVE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(build_app(), ["keys", "list"]).exit_code == 0
    assert runner.invoke(build_app(), ["usage"]).exit_code == 0
