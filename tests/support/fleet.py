"""Several `sigserve serve` processes behind nginx, for the replica tests and bench/replicas_bench.py.

The nginx configuration is the one docs/deploy.md gives (its ```nginx block), with only the
addresses changed to this machine's free ports: what the tests pass is what operators copy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.server import MODEL, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
DOC_REPLICAS = ("127.0.0.1:8001", "127.0.0.1:8002")  # the upstream servers written in the doc
DOC_LISTEN = "listen 8080;"


class Replica:
    """One `sigserve serve` subprocess on a free port; its output goes to `log`."""

    def __init__(self, checkpoint: Path, folder: Path, *flags: str, name: str = "replica"):
        self.checkpoint, self.flags, self.name = checkpoint, list(flags), name
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # added to the environment (say OMP_NUM_THREADS)
        self.prefix: list[str] = []  # before the command (say taskset -c 0-3)

    def start(self, wait: bool = True) -> Replica:
        sigserve = Path(sys.executable).parent / "sigserve"
        cmd = [str(sigserve), "serve", "--model", str(self.checkpoint), "--served-model-name", MODEL,
               "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.folder / "data"),
               "--max-wait-ms", "2", *self.flags]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.prefix, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, **self.env})
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout_s} s:\n{self.output()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Graceful: uvicorn stops accepting, finishes the requests in flight, exits."""
        self._signal(signal.SIGTERM, wait_s=30)

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        self._signal(signal.SIGKILL, wait_s=10)

    def _signal(self, sig: int, wait_s: float) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def nginx_site(upstreams: list[str], port: int) -> str:
    """docs/deploy.md's nginx configuration with these replicas and this listening port."""
    text = DEPLOY_DOC.read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/deploy.md must hold exactly one ```nginx block"
    site = blocks[0]
    lines = [line for line in site.splitlines() if not any(r in line for r in DOC_REPLICAS)]
    servers = [line for line in site.splitlines() if DOC_REPLICAS[0] in line]
    assert servers and DOC_LISTEN in site, "the doc's upstream or listen line moved: update tests/support/fleet.py"
    template = servers[0]
    at = lines.index(next(line for line in lines if line.strip().startswith("upstream ")))
    for upstream in reversed(upstreams):
        lines.insert(at + 1, template.replace(DOC_REPLICAS[0], upstream))
    return "\n".join(lines).replace(DOC_LISTEN, f"listen 127.0.0.1:{port};") + "\n"
