"""The same live-server fixtures as tests/server (a tiny checkpoint served on loopback)."""

from __future__ import annotations

import pytest

from tests.support import images
from tests.support.server import LiveServer, WrappedModel, make_settings


@pytest.fixture(scope="session")
def pngs() -> list[bytes]:
    return images.pngs()


@pytest.fixture(scope="session")
def server_model(tiny_checkpoint):
    """The server's own library instance (its engine's worker owns it); tests compare against
    `tiny_model`, a separate instance on the same checkpoint."""
    import sigserve

    return sigserve.load(tiny_checkpoint, max_image_pixels=4_000_000)


@pytest.fixture(scope="session")
def live(tmp_path_factory, tiny_checkpoint, server_model):
    from sigserve.server.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("server-data"), tiny_checkpoint)
    with LiveServer(create_app(settings, server_model)) as server:
        yield server


@pytest.fixture(scope="session")
def client(live):
    import openai

    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(live):
    import httpx

    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


@pytest.fixture
def make_server(tmp_path, tiny_checkpoint, server_model):
    """Start extra servers with their own settings / model wrapper; stopped at teardown."""
    from sigserve.server.app import create_app

    started: list[LiveServer] = []

    def start(model=None, **overrides) -> LiveServer:
        settings = make_settings(tmp_path / f"data{len(started)}", tiny_checkpoint, **overrides)
        server = LiveServer(create_app(settings, model if model is not None else server_model)).__enter__()
        started.append(server)
        if isinstance(model, WrappedModel):
            model.arm()
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
