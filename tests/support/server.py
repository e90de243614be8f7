"""A real uvicorn server on 127.0.0.1 for tests (in a thread, on a socket bound before start), the
settings tests use, and a model wrapper with knobs for failure tests."""

from __future__ import annotations

import socket
import threading
import time

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
        from sigserve.server.app import server_options

        options = {**server_options(app.state.settings), "log_level": "warning"}
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started or not self._warmed_up():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def _warmed_up(self) -> bool:
        """The warm-ups that /ready waits for are over (done or failed): tests start from a warm server."""
        models = getattr(self.app.state, "models", None)
        return models is not None and all(s.serving.warm or s.serving.warm_up_error is not None for s in models)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def make_settings(tmp_path, checkpoint, **overrides):
    from sigserve.server.settings import Settings

    values = dict(model=str(checkpoint), served_model_name=MODEL, data_dir=tmp_path, max_wait_ms=2.0,
                  max_items=64, max_body_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000, keep_alive_s=30)
    values.update(overrides)
    return Settings(**values)


class WrappedModel:
    """The library model with knobs for failure tests: a delay per batch, an exception to raise,
    and a log of the batches the worker ran."""

    def __init__(self, inner, delay_s: float = 0.0, raise_on_text: BaseException | None = None,
                 raise_on_image: BaseException | None = None):
        self.inner, self.knobs = inner, (delay_s, raise_on_text, raise_on_image)
        self.delay_s, self.raise_on_text, self.raise_on_image = 0.0, None, None  # off during the warm-up
        self.batches: list[tuple[str, int]] = []

    def arm(self) -> None:
        """Turn the knobs on and forget the warm-up's batches (make_server calls it once the server is warm)."""
        self.delay_s, self.raise_on_text, self.raise_on_image = self.knobs
        self.batches.clear()

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


def free_port() -> int:
    """A port that was free a moment ago (for subprocesses that bind themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
