"""KeyStore: keys shown once, stored as salted hashes, authenticated, revoked promptly."""

from __future__ import annotations

from pathlib import Path

import pytest

import sigserve.accounts.keys as keys_mod
from sigserve.accounts.keys import ANONYMOUS, AuthError, KeyStore, bearer_token, database_url_for


def test_create_and_authenticate(store):
    record, plaintext = store.create("alice", rpm=60, images_per_min=100, quota_images=5000)
    assert plaintext.startswith(f"sk-sig-{record.id}-")
    found = store.authenticate(plaintext)
    assert found is not None
    assert (found.id, found.name, found.rpm, found.images_per_min, found.quota_images,
            found.admin) == (record.id, "alice", 60, 100, 5000, False)


def test_wrong_or_malformed_keys_are_refused(store):
    record, plaintext = store.create("alice")
    other_secret = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    assert store.authenticate(other_secret) is None
    assert store.authenticate("sk-sig-000000000000-" + "x" * 43) is None  # unknown id
    assert store.authenticate("not a key") is None
    assert store.authenticate("") is None and store.authenticate(None) is None
    assert store.authenticate(plaintext) is not None


def test_only_hashes_are_stored(store, db_url):
    record, plaintext = store.create("grep-me-name")
    secret = plaintext.rsplit("-", 1)[1]
    store.close()
    folder = Path(db_url.removeprefix("sqlite:///")).parent
    blob = b"".join(p.read_bytes() for p in folder.iterdir())  # db, -wal, -shm
    assert b"grep-me-name" in blob and record.id.encode() in blob  # the grep does see rows
    assert plaintext.encode() not in blob
    assert secret.encode() not in blob


def test_each_key_has_its_own_salt(store):
    store.create("a")
    store.create("b")
    with store.db.connect() as conn:
        rows = conn.execute(keys_mod.api_keys.select()).all()
    assert len({bytes(r.salt) for r in rows}) == 2
    assert len({bytes(r.hash) for r in rows}) == 2


def test_verified_keys_are_cached(store, monkeypatch):
    _, plaintext = store.create("alice")
    calls = []
    real = keys_mod._hash_secret
    monkeypatch.setattr(keys_mod, "_hash_secret", lambda *a: calls.append(1) or real(*a))
    for _ in range(5):
        assert store.authenticate(plaintext) is not None
    assert len(calls) == 1


def test_revoke_by_id_takes_effect_immediately(store):
    record, plaintext = store.create("alice")
    assert store.authenticate(plaintext) is not None  # now cached
    revoked = store.revoke(record.id)
    assert [r.id for r in revoked] == [record.id] and revoked[0].revoked_at is not None
    assert store.authenticate(plaintext) is None


def test_revoke_by_name_and_unknown(store):
    r1, k1 = store.create("bob")
    r2, k2 = store.create("carol")
    assert [r.id for r in store.revoke("bob")] == [r1.id]
    assert store.authenticate(k1) is None and store.authenticate(k2) is not None
    assert store.revoke("nobody") == []
    assert store.revoke("bob") == []  # already revoked


def test_revocation_by_another_process_is_seen_within_refresh(db_url, clock):
    server = KeyStore(db_url, refresh_s=1.0, clock=clock)
    cli = KeyStore(db_url)
    record, plaintext = cli.create("alice")
    assert server.authenticate(plaintext) is not None
    cli.revoke(record.id)
    clock.advance(0.5)
    assert server.authenticate(plaintext) is not None  # still within the 1 s cache
    clock.advance(0.6)
    assert server.authenticate(plaintext) is None
    server.close()
    cli.close()


def test_list_shows_revoked_keys(store):
    a, _ = store.create("a", admin=True)
    b, _ = store.create("b")
    store.revoke(b.id)
    listed = {r.id: r for r in store.list()}
    assert listed[a.id].active and listed[a.id].admin
    assert not listed[b.id].active
    assert [r.id for r in store.list(include_revoked=False)] == [a.id]


def test_open_until_first_key_and_stays_closed_after_revoking_all(db_url, clock):
    s = KeyStore(db_url, clock=clock)
    assert s.is_open()
    assert s.authorize(None) is ANONYMOUS
    record, _ = s.create("only")
    assert not s.is_open()  # same process: no waiting for the cache
    s.revoke(record.id)
    clock.advance(5)
    assert not s.is_open()
    with pytest.raises(AuthError) as exc:
        s.authorize(None)
    assert (exc.value.status, exc.value.type, exc.value.code) == (
        401, "authentication_error", "missing_api_key")
    s.close()


def test_static_key(db_url):
    s = KeyStore(db_url, static_key="let-me-in")
    assert not s.is_open()
    record = s.authenticate("let-me-in")
    assert record is not None and record.kind == "static" and record.admin
    assert s.authenticate("let-me-inn") is None
    with pytest.raises(AuthError) as exc:
        s.authorize("wrong")
    assert exc.value.code == "invalid_api_key"
    s.close()


def test_require_admin(store):
    user, key = store.create("user")
    admin, admin_key = store.create("root", admin=True)
    assert store.require_admin(store.authorize(admin_key)).id == admin.id
    with pytest.raises(AuthError) as exc:
        store.require_admin(store.authorize(key))
    assert (exc.value.status, exc.value.type) == (403, "permission_error")


def test_invalid_limits_rejected(store):
    with pytest.raises(ValueError):
        store.create("x", rpm=0)
    with pytest.raises(ValueError):
        store.create(" ")


@pytest.mark.parametrize("auth, x_api_key, expected", [
    ("Bearer sk-sig-abc", None, "sk-sig-abc"),
    ("bearer   tok ", None, "tok"),
    ("Basic xyz", None, None),
    (None, "from-header", "from-header"),
    ("Bearer ", "fallback", "fallback"),
    (None, None, None),
])
def test_bearer_token(auth, x_api_key, expected):
    assert bearer_token(auth, x_api_key) == expected


def test_database_url_for(tmp_path):
    assert database_url_for(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'sigserve.db'}"
