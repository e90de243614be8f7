"""A throwaway keys and usage database, and a fake clock."""

from __future__ import annotations

import pytest

from sigserve.accounts.keys import KeyStore


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'sigserve.db'}"


@pytest.fixture
def store(db_url):
    s = KeyStore(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def accounts_model(tiny_checkpoint):
    """The tiny checkpoint, loaded once for the servers these tests start."""
    import sigserve

    return sigserve.load(tiny_checkpoint, max_image_pixels=4_000_000)


@pytest.fixture
def serve(tmp_path, tiny_checkpoint, accounts_model):
    """Start in-process servers (uvicorn threads) with given settings; stopped at teardown."""
    from sigserve.server.app import create_app
    from tests.support.server import LiveServer, make_settings

    started: list = []

    def start(**overrides):
        settings = make_settings(tmp_path / f"data{len(started)}", tiny_checkpoint, **overrides)
        server = LiveServer(create_app(settings, accounts_model)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
