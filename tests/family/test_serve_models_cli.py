"""`sigserve serve` with several models as users run it: --model SOURCE=NAME flags and a models file (each
model priced on its own), every model's resident memory stated at load, and a memory budget that
refuses to start, in one line, before a port is served."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.support.images import b64, pngs
from tests.support.server import free_port

SERVE = [sys.executable, "-c", "from sigserve.cli import main; main()", "serve"]


def test_serve_models_from_flags_and_a_models_file(tmp_path, family_checkpoints):
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[[models]]\nmodel = "{family_checkpoints["siglip"]}"\nname = "sig1"\n'
                           "price_per_1k_images = 2.5\nbackend = \"torch\"\n")
    port = free_port()
    cmd = [*SERVE, "--model", f"{family_checkpoints['naflex']}=nf", "--models-file", str(models_file),
           "--port", str(port), "--data-dir", str(tmp_path), "--price-per-1k-images", "1.0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, url)
        cards = httpx.get(url + "/v1/models").json()["data"]
        assert [c["id"] for c in cards] == ["nf", "sig1"]
        assert [c["pricing"]["per_1k_images"] for c in cards] == [1.0, 2.5]
        assert [c["architecture"] for c in cards] == ["naflex", "fixed"] and cards[1]["backend"] == "torch"
        assert all(c["memory_mb"] is not None for c in cards)
        r = httpx.post(url + "/v1/embeddings", json={"model": "sig1", "input": [{"image": b64(pngs()[0])}]})
        assert r.status_code == 200
        usage = httpx.get(url + "/v1/usage").json()["data"]["models"]
        assert usage["sig1"]["cost"] == 2.5 / 1000 and usage["sig1"]["images"] == 1
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "loaded nf: +" in output and "loaded sig1: +" in output and "MB resident" in output, output
    assert "Traceback" not in output, output


def test_serve_refuses_to_start_past_the_memory_budget(tmp_path, family_checkpoints):
    r = subprocess.run([*SERVE, "--model", str(family_checkpoints["siglip"]), "--memory-budget-mb", "50",
                        "--port", str(free_port()), "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "memory budget of 50 MB exceeded" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_two_models_under_one_name_are_refused_in_one_line(tmp_path, family_checkpoints):
    a, b = family_checkpoints["siglip"], family_checkpoints["siglip2-fixed"]
    r = subprocess.run([*SERVE, "--model", f"{a}=same", "--model", f"{b}=same", "--port", str(free_port()),
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "two models are served as ['same']" in r.stderr and "Traceback" not in r.stderr


def _wait_ready(proc, url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)
