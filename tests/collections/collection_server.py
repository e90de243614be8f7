"""A live uvicorn server in a thread (as tests/server does) and a helper to start one per test."""

from __future__ import annotations

import base64
import socket
import threading
import time

MODEL = "tiny-siglip2"


class LiveServer:
    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def start_server(data_dir, checkpoint, model, **overrides) -> LiveServer:
    from sigserve.server.app import create_app
    from sigserve.server.settings import Settings

    settings = Settings(model=str(checkpoint), served_model_name=MODEL, data_dir=data_dir, max_wait_ms=2.0,
                        **overrides)
    return LiveServer(create_app(settings, model)).__enter__()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()
