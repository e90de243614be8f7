"""kill -9 of a server in the middle of a bulk add: after a restart, every item acknowledged
before the kill is there, and the collection is readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.collections.collection_images import png
from tests.collections.collection_server import data_uri
from tests.support.server import free_port

START = "from sigserve.cli import main; main()"


def serve(checkpoint, data_dir, port) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", START, "serve", "--model", str(checkpoint), "--port", str(port),
                             "--data-dir", str(data_dir), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("server exited during startup")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def test_kill_9_during_bulk_add_keeps_every_acknowledged_item(tmp_path, tiny_checkpoint):
    port, data = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}/v1/collections"
    proc = serve(tiny_checkpoint, data, port)
    acked: list[str] = []
    try:
        assert httpx.post(url, json={"name": "bulk"}).status_code == 200

        def ingest():
            with httpx.Client(timeout=30) as client:
                for batch in range(200):  # bounded: the kill comes long before the end
                    items = [{"id": f"b{batch}-{j}", "image": data_uri(png(batch * 4 + j, (24, 24)))} for j in range(4)]
                    try:
                        response = client.post(f"{url}/bulk/items", json={"items": items})
                    except httpx.TransportError:
                        return  # the server is gone
                    if response.status_code == 200:
                        acked.extend(s["id"] for s in response.json()["data"] if s["status"] != "failed")

        writer = threading.Thread(target=ingest)
        writer.start()
        deadline = time.monotonic() + 120
        while len(acked) < 24 and time.monotonic() < deadline and writer.is_alive():
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        writer.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 24
    proc = serve(tiny_checkpoint, data, port)
    try:
        info = httpx.get(f"{url}/bulk").json()
        assert info["count"] >= len(acked)
        found = httpx.post(f"{url}/bulk/search", json={"query": {"text": "x"}, "top_k": 10_000,
                                                       "filter": {"_id": {"$in": acked}}}, timeout=60).json()["data"]
        assert sorted(h["id"] for h in found) == sorted(acked)
    finally:
        proc.kill()
        proc.wait(30)
