"""The standing reliability campaign against a real `sigserve serve` process on loopback.

Each phase attacks one way a hosted API breaks and returns its figures; `run_campaign` runs them all
against one server and checks the invariants (no 5xx but the ones a phase provokes on purpose, no
hang, the server still ready). tests/reliability/test_campaign.py runs it small in CI; the long mode,

    python -m tests.reliability --minutes 30 [--json out.json]

runs it at scale for docs/reliability.md. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.support.images import b64, image_bytes
from tests.support.server import free_port

MODEL = "campaign-model"


@dataclass
class Server:
    """`sigserve serve` as a subprocess (its own process: RSS measurable, kill -9 possible)."""

    checkpoint: Path
    data_dir: Path
    admin: str = "sk-campaign-admin"
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> Server:
        self.port = free_port()
        cmd = [sys.executable, "-m", "sigserve.cli", "serve", "--model", str(self.checkpoint), "--served-model-name",
               MODEL, "--port", str(self.port), "--data-dir", str(self.data_dir), "--api-key", self.admin,
               "--log-level", "warning", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sigserve serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not become ready")

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process, MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        field_mb = lambda name: int(status.split(f"{name}:")[1].split()[0]) / 1024
        return field_mb("VmRSS"), field_mb("VmHWM")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(30)

    def ready(self) -> bool:
        return httpx.get(self.url + "/ready", timeout=10).status_code == 200


def _post(client: httpx.Client, path: str, body: dict, key: str) -> httpx.Response:
    return client.post(path, json=body, headers={"authorization": f"Bearer {key}"})


def _envelope_ok(r: httpx.Response) -> bool:
    return r.status_code < 400 or set(r.json().get("error", {})) == {"message", "type", "param", "code"}


# -- phases -----------------------------------------------------------------------------------------


def fuzz(server: Server, examples: int, deadline: float) -> dict:
    """schemathesis cases from the server's own OpenAPI schema, valid and invalid, until `examples`
    requests or the deadline. -> status counts; any 5xx is a finding."""
    import hypothesis.strategies as st
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().method.upper() == "POST"]
    statuses: Counter = Counter()
    failures: list[str] = []
    per_mode = max(1, examples // 2)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        cases = st.sampled_from(operations).flatmap(lambda op, mode=mode: op.as_strategy(generation_mode=mode))

        @given(case=cases, served=st.booleans())
        @settings(max_examples=per_mode, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case, served):
            if time.monotonic() > deadline:
                return
            if served and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = MODEL
            r = case.call(base_url=server.url, timeout=60, headers={"authorization": f"Bearer {server.admin}"})
            statuses[r.status_code] += 1
            if r.status_code >= 500 or (r.status_code >= 400 and not _envelope_ok(r)):
                failures.append(f"{case.method} {case.path} -> {r.status_code}: {r.text[:200]}")

        check()
    return {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())), "failures": failures}


def hostile_inputs(server: Server) -> dict:
    """Corrupt, truncated, oversized and bomb images; lone surrogates; very long texts; server paths."""
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(jpeg, "JPEG")
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # tiny file, 400 MP
    cases = {
        "corrupt": {"input": [{"image": b64(b"\xff\xd8\xff\xe0 nonsense")}]},
        "truncated": {"input": [{"image": b64(jpeg.getvalue()[:200])}]},
        "bomb": {"input": [{"image": b64(bomb.getvalue())}]},
        "eps": {"input": [{"image": b64(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n")}]},
        "path": {"input": [{"image": "/etc/passwd"}]},
        "long text": {"input": ["x" * 200_000]},
        "token ids": {"input": [[1, 2, 3]]},
    }
    out = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, body in cases.items():
            r = _post(client, "/v1/embeddings", {"model": MODEL, **body}, server.admin)
            out[name] = r.status_code
        raw = f'{{"model": "{MODEL}", "input": ["a\\ud800b"]}}'
        r = client.post("/v1/embeddings", content=raw, headers={"content-type": "application/json",
                                                               "authorization": f"Bearer {server.admin}"})
        out["lone surrogate"] = r.status_code
    return {"statuses": out, "all_4xx": all(400 <= s < 500 for s in out.values())}


def mixed_concurrency(server: Server, requests: int, workers: int = 12) -> dict:
    """Valid and invalid requests at once: every valid one succeeds, every invalid one is a 4xx."""
    good = {"model": MODEL, "input": [{"image": b64(image_bytes(1))}, "a cat"]}
    bad = {"model": MODEL, "input": [{"image": b64(b"broken")}]}
    with httpx.Client(base_url=server.url, timeout=120) as client, cf.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda i: _post(client, "/v1/embeddings", bad if i % 3 == 0 else good,
                                                server.admin).status_code, range(requests)))
    wrong = sum(1 for i, s in enumerate(results) if (s != 400 if i % 3 == 0 else s != 200))
    return {"requests": requests, "wrong_status": wrong, "statuses": dict(Counter(results))}


def starvation(server: Server, heavy_key: str, light_key: str, seconds: float) -> dict:
    """A heavy key keeps sending the largest classify it may (labels x templates) while a light key
    sends one-text requests: the light key's latency is the figure (its bound is stated in the docs)."""
    heavy = {"model": MODEL, "input": [{"image": b64(image_bytes(2))}], "labels": [f"thing {i}" for i in range(256)],
             "templates": [f"a photo of {{}} number {j}" for j in range(8)]}
    stop = time.monotonic() + seconds
    heavy_done: list[int] = []

    def heavy_loop():
        with httpx.Client(base_url=server.url, timeout=300) as c:
            while time.monotonic() < stop:
                heavy["labels"] = [f"thing {i} {len(heavy_done)}" for i in range(256)]  # no cache hits
                heavy_done.append(_post(c, "/v1/classify", heavy, heavy_key).status_code)

    latencies, statuses = [], Counter()
    with cf.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(heavy_loop) for _ in range(2)]
        time.sleep(min(2.0, seconds / 4))
        with httpx.Client(base_url=server.url, timeout=300) as c:
            i = 0
            while time.monotonic() < stop:
                t0 = time.monotonic()
                r = _post(c, "/v1/embeddings", {"model": MODEL, "input": f"light request {i}"}, light_key)
                latencies.append(time.monotonic() - t0)
                statuses[r.status_code] += 1
                i += 1
                time.sleep(0.2)
        for f in futures:
            f.result()
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"light_requests": len(latencies), "light_statuses": dict(statuses), "light_p50_s": float(np.median(lat)),
            "light_max_s": float(lat.max()), "heavy_requests": len(heavy_done), "heavy_statuses": dict(Counter(heavy_done))}


def memory(server: Server) -> dict:
    """The campaign's worst images for memory, several at once: peak RSS before and after."""
    from tests.reliability.test_findings import _png_16bit

    big16 = b64(_png_16bit(7999))
    rgba = io.BytesIO()
    Image.new("RGBA", (6000, 6000), (10, 20, 30, 128)).save(rgba, "PNG")
    body = {"model": MODEL, "input": [{"image": big16}, {"image": b64(rgba.getvalue())}]}
    before = server.rss_mb()
    with httpx.Client(base_url=server.url, timeout=600) as client, cf.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: _post(client, "/v1/embeddings", body, server.admin).status_code, range(4)))
    after = server.rss_mb()
    return {"statuses": dict(Counter(statuses)), "rss_before_mb": round(before[0]), "peak_rss_mb": round(after[1]),
            "rss_after_mb": round(after[0])}


def quota_exactness(server: Server, key: str, quota: int, requests: int = 20, images: int = 5) -> dict:
    body = {"model": MODEL, "input": [{"image": b64(image_bytes(i))} for i in range(images)]}
    with httpx.Client(base_url=server.url, timeout=120) as client, cf.ThreadPoolExecutor(requests) as pool:
        statuses = list(pool.map(lambda _: _post(client, "/v1/embeddings", body, key).status_code, range(requests)))
        usage = client.get("/v1/usage", headers={"authorization": f"Bearer {key}"}).json()["data"]
    return {"statuses": dict(Counter(statuses)), "images_recorded": usage["images"], "quota": quota,
            "exact": usage["images"] == images * statuses.count(200) <= quota}


def slow_clients(server: Server, connections: int, hold_s: float) -> dict:
    """Connections that trickle headers or stall their body: how many are still open after `hold_s`."""
    socks = []
    for i in range(connections):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + (b"Content-Length: 100\r\n\r\n{" if i % 2 else b""))
        socks.append(s)
    time.sleep(hold_s)
    still_open = sum(_open(s) for s in socks)
    return {"connections": connections, "held_s": hold_s, "still_open": still_open,
            "server_ready": server.ready()}


def _open(s: socket.socket) -> bool:
    """Whether the server still holds this connection: its answer (a 408, say) read to the end finds EOF."""
    s.settimeout(0.5)
    try:
        s.sendall(b"X: y\r\n")
        while s.recv(65536):
            pass
        return False
    except TimeoutError:
        return True
    except OSError:  # reset: closed
        return False
    finally:
        s.close()


def kill_under_load(server: Server, key: str, seconds: float) -> dict:
    """kill -9 in the middle of a load, restart on the same database: usage equals the successes the
    clients saw (a request whose usage was committed just before the kill may be unanswered)."""
    body = {"model": MODEL, "input": [{"image": b64(image_bytes(4))}]}
    ok = Counter()
    stop = time.monotonic() + seconds

    def client_loop():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while time.monotonic() < stop:
                try:
                    ok[_post(c, "/v1/embeddings", body, key).status_code] += 1
                except httpx.HTTPError:
                    ok["cut"] += 1
                    return

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop) for _ in range(4)]
        time.sleep(seconds / 2)
        server.stop(kill=True)
        for f in futures:
            f.result()
    server.start()
    usage = httpx.get(server.url + "/v1/usage", headers={"authorization": f"Bearer {key}"}).json()["data"]
    return {"successes_seen": ok[200], "cut_off": ok["cut"], "usage_requests": usage["requests"],
            "consistent": ok[200] <= usage["requests"] <= ok[200] + ok["cut"]}


def run_campaign(checkpoint: Path, data_dir: Path, scale: float = 1.0, minutes: float | None = None) -> dict:
    """Every phase once against one server (restarted once, by the kill phase). `scale` multiplies the
    request counts; `minutes` bounds the fuzz phase's time in the long mode."""
    from sigserve.accounts.keys import KeyStore, database_url_for

    data_dir.mkdir(parents=True, exist_ok=True)
    store = KeyStore(database_url_for(data_dir))
    _, heavy = store.create("heavy")
    _, light = store.create("light")
    _, quota_key = store.create("quota", quota_images=5)
    _, kill_key = store.create("kill")
    store.close()
    server = Server(checkpoint, data_dir, extra=["--header-timeout-s", "2", "--body-timeout-s", "2"]).start()
    report: dict = {"scale": scale}
    try:
        fuzz_seconds = 60 * minutes * 0.5 if minutes else 600
        report["fuzz"] = fuzz(server, int(200 * scale), time.monotonic() + fuzz_seconds)
        report["hostile_inputs"] = hostile_inputs(server)
        report["mixed_concurrency"] = mixed_concurrency(server, int(36 * scale))
        report["starvation"] = starvation(server, heavy, light, seconds=min(120.0, 8 * scale))
        report["memory"] = memory(server)
        report["quota"] = quota_exactness(server, quota_key, quota=5)
        report["slow_clients"] = slow_clients(server, int(40 * min(scale, 3)), hold_s=4.0)
        report["kill_under_load"] = kill_under_load(server, kill_key, seconds=min(60.0, 4 * scale))
        report["ready_at_end"] = server.ready()
    finally:
        server.stop()
    return report


def checkpoint_for(size: str, folder: Path) -> Path:
    from tests.support.checkpoints import make_checkpoint

    if not (folder / "preprocessor_config.json").is_file():  # written last
        make_checkpoint(folder, size, seed=0)
    return folder
