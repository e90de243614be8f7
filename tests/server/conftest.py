"""A real uvicorn server on 127.0.0.1 (a free port, in a thread) serving the tiny checkpoint, the
official openai client pointed at it, and image bytes to send."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

MODEL = "tiny-siglip2"


class LiveServer:
    """uvicorn in a background thread, on a socket bound before start (no port race)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def make_settings(tmp_path, checkpoint, **overrides):
    from sigserve.server.settings import Settings

    values = dict(model=str(checkpoint), served_model_name=MODEL, data_dir=tmp_path, max_wait_ms=2.0,
                  max_items=64, max_body_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000)
    values.update(overrides)
    return Settings(**values)


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


# -- images ---------------------------------------------------------------------------------------


def image_bytes(seed: int, size=(48, 32), fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: compresses like a photo, differs per seed.
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (seed + 3)) % 256, (y * (seed + 5)) % 256, ((x + y) * 7) % 256], -1)
    arr = np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


@pytest.fixture(scope="session")
def pngs() -> list[bytes]:
    sizes = [(48, 32), (32, 64), (100, 20), (16, 16), (64, 64), (33, 47)]
    return [image_bytes(i, s) for i, s in enumerate(sizes)]


class WrappedModel:
    """The library model with knobs for failure tests: a delay per batch, an exception to raise,
    and a log of the batches the worker ran."""

    def __init__(self, inner, delay_s: float = 0.0, raise_on_text: BaseException | None = None,
                 raise_on_image: BaseException | None = None):
        self.inner, self.delay_s = inner, delay_s
        self.raise_on_text, self.raise_on_image = raise_on_text, raise_on_image
        self.batches: list[tuple[str, int]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_token_ids(self, ids):
        self.batches.append(("text", len(ids)))
        time.sleep(self.delay_s)
        if self.raise_on_text is not None:
            raise self.raise_on_text
        return self.inner.encode_token_ids(ids)

    def encode_patches(self, patches, with_features=False):
        self.batches.append(("image", len(patches)))
        time.sleep(self.delay_s)
        if self.raise_on_image is not None:
            raise self.raise_on_image
        return self.inner.encode_patches(patches, with_features=with_features)


@pytest.fixture
def make_server(tmp_path, tiny_checkpoint, server_model):
    """Start extra servers with their own settings / model wrapper; stopped at teardown."""
    from sigserve.server.app import create_app

    started: list[LiveServer] = []

    def start(model=None, **overrides) -> LiveServer:
        settings = make_settings(tmp_path / f"data{len(started)}", tiny_checkpoint, **overrides)
        server = LiveServer(create_app(settings, model if model is not None else server_model)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
