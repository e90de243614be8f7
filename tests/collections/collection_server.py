"""Starting a live server for collections tests (tests.support.server's LiveServer and settings)."""

from __future__ import annotations

import base64

from tests.support.server import LiveServer, make_settings


def start_server(data_dir, checkpoint, model, **overrides) -> LiveServer:
    from sigserve.server.app import create_app

    settings = make_settings(data_dir, checkpoint, **overrides)
    return LiveServer(create_app(settings, model)).__enter__()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()
