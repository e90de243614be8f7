"""A fleet for the replica tests: a fresh PostgreSQL database and the session's Redis, two
`sigserve serve` subprocesses sharing them (tiny checkpoint, torch backend: quickest to start),
and nginx in front configured by docs/deploy.md. Module-scoped: the tests of a module share one
fleet, and a test that stops a replica starts it again (`fleet.ensure_running()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sigserve.accounts.keys import KeyStore
from tests.support.fleet import Replica, nginx_site
from tests.support.server import free_port
from tests.support.services import Nginx, ServiceUnavailable

KEY_REFRESH_S = 30.0  # long on purpose: a change seen within a second came through Redis
DATABASE_TIMEOUT_S = 3.0


@dataclass
class Fleet:
    replicas: list[Replica]
    nginx: Nginx | None
    database_url: str
    redis_url: str
    admin_key: str
    postgres: object
    created: list[str] = field(default_factory=list)

    def ensure_running(self) -> None:
        for replica in self.replicas:
            if not replica.running:
                replica.start(wait=False)
        for replica in self.replicas:
            replica.wait_ready()

    def new_key(self, name: str, **limits) -> tuple[str, str]:
        store = KeyStore(self.database_url)
        record, secret = store.create(name, **limits)
        store.close()
        return record.id, secret


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_checkpoint, postgres_server, redis_server) -> Fleet:
    folder: Path = tmp_path_factory.mktemp("fleet")
    database_url = postgres_server.create_database()
    with redis_server.client() as client:
        client.flushall()
    store = KeyStore(database_url)  # migrates the new database once, before the replicas start
    _, admin_key = store.create("ops", admin=True)
    store.close()
    flags = ["--backend", "torch", "--database-url", database_url, "--redis-url", redis_server.url,
             "--key-refresh-s", str(KEY_REFRESH_S), "--database-timeout-s", str(DATABASE_TIMEOUT_S),
             "--trusted-proxies", "127.0.0.1", "--log-level", "info", "--preprocess-threads", "1",
             "--collections-uri", str(folder / "shared-collections")]  # one store every replica reaches
    replicas = [Replica(tiny_checkpoint, folder / f"r{i}", *flags, name=f"replica{i}") for i in range(2)]
    for replica in replicas:
        replica.start(wait=False)
    nginx = None
    try:
        for replica in replicas:
            replica.wait_ready()
        port = free_port()
        try:
            nginx = Nginx(nginx_site([f"127.0.0.1:{r.port}" for r in replicas], port), port).__enter__()
        except ServiceUnavailable as exc:
            print(f"SERVICE UNAVAILABLE: nginx ({exc}); the tests through nginx skip")
        yield Fleet(replicas, nginx, database_url, redis_server.url, admin_key, postgres_server)
    finally:
        if nginx is not None:
            nginx.__exit__(None, None, None)
        for replica in replicas:
            replica.stop()
