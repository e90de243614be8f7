"""`sigserve serve` as users run it: a subprocess on a free port, probed over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.support.server import free_port


def test_serve_dummy_with_api_key(tiny_checkpoint, tmp_path):
    port = free_port()
    env = {**os.environ, "SIGSERVE_MAX_ITEMS": "3"}  # settings not given as flags come from SIGSERVE_*
    cmd = [sys.executable, "-c", "from sigserve.cli import main; main()", "serve", "--model", str(tiny_checkpoint),
           "--host", "127.0.0.1", "--port", str(port), "--api-key", "k-123", "--load-format", "dummy",
           "--data-dir", str(tmp_path), "--served-model-name", "tiny", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        auth = {"authorization": "Bearer k-123"}
        assert httpx.get(url + "/v1/models").status_code == 401
        card = httpx.get(url + "/v1/models", headers=auth).json()["data"][0]
        assert card["id"] == "tiny" and card["dummy"] is True
        r = httpx.post(url + "/v1/embeddings", headers=auth, json={"model": "tiny", "input": ["a", "b", "c", "d"]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_items"
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (hence -15)
    assert proc.returncode in (0, -15) and "Traceback" not in output, output


def test_serve_bad_model_fails_before_binding(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from sigserve.cli import main; main()", "serve", "--model",
                        str(tmp_path / "missing"), "--port", str(free_port()), "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
