"""Issue 9, findings 8-10: wrong secrets are throttled per key id and per client before any scrypt
is spent, an unknown key id costs the same scrypt as a real one, keys in query strings never reach
the access log, and the database file and folder are private."""

from __future__ import annotations

import logging
import os
import stat

import httpx
import pytest

from sigserve.accounts import keys as keys_mod
from sigserve.accounts.keys import KeyStore
from sigserve.accounts.ratelimit import AuthThrottle, LocalBuckets
from sigserve.server import accesslog
from tests.support.server import MODEL


def _wrong(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


def test_failed_guesses_are_throttled_per_key_id(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = KeyStore(url)
    _, key = store.create("victim")
    server = serve(database_url=url, max_failed_auth_per_min=3)
    post = lambda k, **h: httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"},  # noqa: E731
                                     headers={"authorization": f"Bearer {k}", **h}, timeout=60)
    assert post(key).status_code == 200  # verified once, then remembered
    for i in range(3):  # three guesses from three addresses (trusted proxy header from loopback)
        r = post(_wrong(key), **{"x-forwarded-for": f"198.51.100.{i}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = post(_wrong(key), **{"x-forwarded-for": "198.51.100.9"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_attempts"
    assert int(r.headers["retry-after"]) >= 1
    assert post(key).status_code == 200  # the owner, already verified, is not locked out
    store.close()


def test_failed_guesses_are_throttled_per_client(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = KeyStore(url)
    _, key = store.create("someone")
    server = serve(database_url=url, max_failed_auth_per_min=3)
    attacker = {"x-forwarded-for": "203.0.113.5"}

    def guess(i):  # a different, random key id each time: only the per-client bucket can stop this
        fake = f"sk-sig-{i:012x}-{'x' * 43}"
        return httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"},
                          headers={"authorization": f"Bearer {fake}", **attacker}, timeout=60)

    assert [guess(i).status_code for i in range(4)] == [401, 401, 401, 429]
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"},
                   headers={"authorization": f"Bearer {key}", "x-forwarded-for": "203.0.113.6"}, timeout=60)
    assert r.status_code == 200  # another client is not affected
    store.close()


def test_unknown_and_revoked_ids_cost_a_scrypt_like_real_ones(tmp_path, monkeypatch):
    store = KeyStore(f"sqlite:///{tmp_path / 'k.db'}")
    real, key = store.create("real")
    _, gone = store.create("gone")
    store.revoke("gone")
    calls: list[int] = []
    original = keys_mod._hash_secret
    monkeypatch.setattr(keys_mod, "_hash_secret", lambda *a: calls.append(1) or original(*a))
    for attempt in (_wrong(key), f"sk-sig-{'f' * 12}-{'y' * 43}", gone):
        calls.clear()
        assert store.authenticate(attempt) is None
        assert len(calls) == 1, attempt  # exactly one scrypt whether or not the id exists
    calls.clear()
    assert store.authenticate("not-a-key") is None and calls == []  # not the shape of a key: nothing to hide
    store.close()


def test_throttle_checks_before_the_scrypt(tmp_path, monkeypatch):
    store = KeyStore(f"sqlite:///{tmp_path / 'k.db'}", throttle=AuthThrottle(2, LocalBuckets()))
    _, key = store.create("k")
    calls: list[int] = []
    original = keys_mod._hash_secret
    monkeypatch.setattr(keys_mod, "_hash_secret", lambda *a: calls.append(1) or original(*a))
    for _ in range(2):
        assert store.authenticate(_wrong(key), client="192.0.2.1") is None
    with pytest.raises(keys_mod.AuthError) as err:
        store.authenticate(_wrong(key), client="192.0.2.1")
    assert err.value.status == 429 and len(calls) == 2  # the refused attempt spent no scrypt
    store.close()


def _uvicorn_record(path: str) -> logging.LogRecord:
    # As uvicorn's httptools/h11 protocols log each request.
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", 401), None)


@pytest.mark.parametrize("path, shown", [
    ("/v1/models?api_key=sk-sig-0123456789ab-SECRETSECRETSECRETSECRET", "/v1/models?api_key=[redacted]"),
    ("/v1/models?a=1&key=abc&Token=def;access_token=ghi#x", "/v1/models?a=1&key=[redacted]&Token=[redacted];"
                                                            "access_token=[redacted]#x"),
    ("/v1/models?monkey=1&keyboard=2", "/v1/models?monkey=1&keyboard=2"),
])
def test_access_log_redacts_keys_in_query_strings(path, shown):
    record = _uvicorn_record(path)
    assert accesslog.RedactSecrets().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {shown} HTTP/1.1" 401'


def test_the_app_installs_the_redaction(serve):
    serve()
    logger = logging.getLogger(accesslog.ACCESS_LOGGER)
    assert sum(isinstance(f, accesslog.RedactSecrets) for f in logger.filters) == 1
    serve()  # a second app in the process does not stack a second filter
    assert sum(isinstance(f, accesslog.RedactSecrets) for f in logger.filters) == 1


def test_database_file_0600_and_folder_0700(tmp_path):
    folder = tmp_path / "new" / "data"
    store = KeyStore(f"sqlite:///{folder / 'sigserve.db'}")
    store.create("k")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [p for p in folder.iterdir() if p.name.startswith("sigserve.db")]
    assert {p.name for p in files} >= {"sigserve.db", "sigserve.db-wal"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o600" for p in files}
    store.close()


def test_an_old_world_readable_database_is_tightened(tmp_path):
    path = tmp_path / "sigserve.db"
    KeyStore(f"sqlite:///{path}").close()
    os.chmod(path, 0o644)  # as versions before this one made it
    KeyStore(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
