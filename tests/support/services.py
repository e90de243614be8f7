"""Throw-away PostgreSQL, Redis and nginx instances for tests and bench/: each in its own temporary
folder, on a free loopback port, started from Debian's packages (never the system service) and
stopped at the end. `.ci/run` installs the packages; when a binary is missing or will not start,
`ServiceUnavailable` says why and the fixtures skip with that reason.

    with Postgres() as pg:  url = pg.create_database()     # postgresql+psycopg://...
    with Redis() as r:      r.url                          # redis://127.0.0.1:PORT/0
    with Nginx(config_text) as n: n.url                    # config_text: http-level blocks
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.server import free_port

START_TIMEOUT_S = 30


class ServiceUnavailable(RuntimeError):
    """A service could not be started here (binary missing, no unprivileged user, failed start)."""


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"{what} exited with {proc.returncode}: {_tail(log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    proc.kill()
    raise ServiceUnavailable(f"{what} did not answer within {timeout_s} s: {_tail(log)}")


def _tail(log: Path, chars: int = 800) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout_s: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Postgres:
    """A PostgreSQL cluster made by initdb in a temporary folder. As root the server runs as the
    `postgres` user (initdb refuses root). `stop()` / `start()` take it down and bring it back on
    the same port with the same data (the "database down mid-run" tests)."""

    def __init__(self) -> None:
        self.bin = self._bin_dir()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable("running as root and there is no `postgres` user to run PostgreSQL") from None
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="sigserve-pg-"))
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.base_url = f"postgresql+psycopg://sigserve@127.0.0.1:{self.port}"

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if found:
            return Path(found[-1]).parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).resolve().parent
        raise ServiceUnavailable("PostgreSQL is not installed (apt-get install postgresql)")

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, user=self.user, group=self.user, capture_output=True, text=True, timeout=120)

    def __enter__(self) -> Postgres:
        done = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "sigserve", "-A", "trust",
                         "-E", "UTF8", "--no-sync", "--no-instructions")
        if done.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {done.stderr[-800:]}")
        self.start()
        return self

    def start(self) -> None:
        self.log.touch()
        if self.user:
            shutil.chown(self.log, self.user, self.user)
        # fsync off: a test cluster trades durability for speed; everything else is the default server.
        cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off", "-c", "max_connections=200"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, user=self.user, group=self.user, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait(self._accepts, "PostgreSQL", self.proc, self.log)

    def _accepts(self) -> bool:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="sigserve", dbname="postgres", connect_timeout=2):
            return True

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # "fast" shutdown: clients are disconnected at once

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="sigserve", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.base_url}/{name}"

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """redis-server on a free loopback port, nothing persisted."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise ServiceUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="sigserve-redis-"))
        self.log = self.dir / "redis.log"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Redis:
        self.start()
        return self

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.dir), "--logfile", str(self.log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self.ping, "redis-server", self.proc, self.log)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def stop(self) -> None:
        _stop(self.proc)

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


MAIN_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/site.conf;
}}
"""


class Nginx:
    """nginx with `site` (http-level blocks: upstream, server) wrapped in a minimal main config."""

    def __init__(self, site: str, port: int) -> None:
        self.binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not self.binary:
            raise ServiceUnavailable("nginx is not installed (apt-get install nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="sigserve-nginx-"))
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        (self.dir / "site.conf").write_text(site)
        user = "user root;" if os.geteuid() == 0 else ""  # workers read the temp folders made here
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(dir=self.dir, user=user))
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Nginx:
        cmd = [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")]
        test = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected the configuration: {test.stderr}")  # our bug, not the machine's
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            import socket

            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        _wait(listening, "nginx", self.proc, self.dir / "error.log")
        return self

    def error_log(self) -> str:
        return _tail(self.dir / "error.log", 20_000)

    def __exit__(self, *exc) -> None:
        _stop(self.proc, signal.SIGQUIT)  # graceful
        shutil.rmtree(self.dir, ignore_errors=True)


# -- pytest fixtures (registered for the whole suite by tests/conftest.py) ---------------------------

REQUIRE_ENV = "SIGSERVE_REQUIRE_SERVICES"  # set by .ci/run: a service that will not start fails the run


def _start_or_skip(factory):
    import pytest

    try:
        return factory().__enter__()
    except ServiceUnavailable as exc:
        message = f"SERVICE UNAVAILABLE, test skipped: {exc}"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)


def _session_service(factory):
    import pytest

    @pytest.fixture(scope="session")
    def fixture():
        service = _start_or_skip(factory)
        yield service
        service.__exit__(None, None, None)

    return fixture


postgres_server = _session_service(Postgres)
redis_server = _session_service(Redis)


def _fixture(fn):
    import pytest

    return pytest.fixture(fn)


@_fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's PostgreSQL."""
    return postgres_server.create_database()


@_fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url
