"""Keys managed over HTTP: create (secret shown once), list, get, change limits, revoke, usage per
key and day as JSON and CSV; admin keys only; errors in the usual envelope; the CLI sees the same."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import pytest

from sigserve.accounts.keys import KeyStore
from tests.support.server import MODEL


@pytest.fixture
def admin_server(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = KeyStore(url)
    _, admin = store.create("ops", admin=True)
    _, user = store.create("user")
    store.close()
    server = serve(database_url=url, api_key="static-admin")
    return server, url, admin, user


def _client(server, key):
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=60)


def test_key_lifecycle(admin_server):
    server, url, admin, _ = admin_server
    with _client(server, admin) as ops:
        r = ops.post("/v1/admin/keys", json={"name": "alice", "rpm": 2, "quota_images": 100})
        assert r.status_code == 201
        created = r.json()
        secret, key_id = created["key"], created["id"]
        assert secret.startswith(f"sk-sig-{key_id}-") and created["rpm"] == 2 and created["quota_images"] == 100
        listed = ops.get("/v1/admin/keys").json()
        assert listed["object"] == "list" and "alice" in [k["name"] for k in listed["data"]]
        assert all("key" not in k for k in listed["data"])  # never the secret again
        assert "key" not in ops.get(f"/v1/admin/keys/{key_id}").json()

        with _client(server, secret) as alice:
            assert alice.post("/v1/embeddings", json={"model": MODEL, "input": "a"}).headers[
                "x-ratelimit-limit-requests"] == "2"
            changed = ops.patch(f"/v1/admin/keys/{key_id}", json={"rpm": 50, "quota_images": None}).json()
            assert changed["rpm"] == 50 and changed["quota_images"] is None
            # the same replica applies it at once
            assert alice.post("/v1/embeddings", json={"model": MODEL, "input": "a"}).headers[
                "x-ratelimit-limit-requests"] == "50"
            revoked = ops.delete(f"/v1/admin/keys/{key_id}").json()
            assert revoked["revoked_at"] is not None
            r = alice.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = ops.patch(f"/v1/admin/keys/{key_id}", json={"rpm": 5})
        assert r.status_code == 409 and r.json()["error"]["code"] == "key_revoked"
        assert ops.get("/v1/admin/keys", params={"include_revoked": False}).json()["data"][-1]["name"] != "alice"
    store = KeyStore(url)  # the CLI's view is the same database
    assert [k.name for k in store.list() if not k.active] == ["alice"]
    store.close()


def test_errors_use_the_envelope(admin_server):
    server, _, admin, user = admin_server
    with _client(server, user) as not_admin:
        r = not_admin.get("/v1/admin/keys")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    assert httpx.get(server.url + "/v1/admin/keys").status_code == 401
    with _client(server, admin) as ops:
        r = ops.get("/v1/admin/keys/000000000000")
        assert r.status_code == 404 and r.json()["error"] == {
            "message": "no key with id '000000000000'", "type": "not_found_error", "param": "key_id",
            "code": "key_not_found"}
        r = ops.post("/v1/admin/keys", json={"name": "x", "rpm": 0})
        assert r.status_code == 422 and r.json()["error"]["param"] == "rpm"
        r = ops.patch("/v1/admin/keys/000000000000", json={"surprise": 1})
        assert r.status_code == 422
        r = ops.patch("/v1/admin/keys/000000000000", json={"rpm": 3})
        assert r.status_code == 404
    with _client(server, "static-admin") as static:  # the static key is an admin too
        assert static.get("/v1/admin/keys").status_code == 200


def test_usage_per_key_and_day_as_json_and_csv(admin_server):
    server, _, admin, user = admin_server
    with _client(server, user) as u:
        for _ in range(3):
            assert u.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}).status_code == 200
    with _client(server, admin) as ops:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        rows = ops.get("/v1/admin/usage").json()["data"]
        mine = [r for r in rows if r["name"] == "user"]
        assert len(mine) == 1 and mine[0]["date"] == today and mine[0]["requests"] == 3 and mine[0]["model"] == MODEL
        assert mine[0]["text_tokens"] > 0
        only = ops.get("/v1/admin/usage", params={"key_id": mine[0]["key_id"], "since": today, "until": today}).json()
        assert only["data"] == mine
        assert ops.get("/v1/admin/usage", params={"until": "2000-01-01"}).json()["data"] == []
        r = ops.get("/v1/admin/usage", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert list(table[0]) == ["date", "key_id", "name", "model", "requests", "images", "patches", "text_tokens",
                                  "cost", "searches"]
        assert [row for row in table if row["name"] == "user"][0]["requests"] == "3"
        r = ops.get("/v1/admin/usage", params={"since": "yesterday"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "since"
