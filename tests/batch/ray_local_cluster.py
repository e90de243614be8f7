"""A real two-node Ray cluster on this machine, for tests and bench/batch_bench.py: a head and a worker
node started with `ray start`, each with its own CPUs and raylet, sharing a private temp folder.

Stopping never uses `ray stop`: it kills every Ray process on the machine by name, other developers'
clusters included. Each `ray start` runs in a new session, so the daemons it leaves behind (and the
workers their raylet forks) share its process group; `stop()` signals the Ray processes of exactly
those groups, and anything still running from this cluster's temp folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node; Ray's default is 30% of RAM, far more than a test needs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    def __init__(self, cpus_per_node: tuple[int, ...] = (1, 1), object_store_bytes: int = OBJECT_STORE_BYTES):
        self.cpus_per_node = cpus_per_node
        self.object_store_bytes = object_store_bytes
        self.ray = str(Path(sys.executable).with_name("ray"))
        # Short: Ray's unix sockets live below it, and socket paths must stay under 108 bytes.
        self.temp = tempfile.mkdtemp(prefix="sgr", dir="/tmp")
        self._in_temp = re.escape(self.temp) + r"(/|\s|$)"  # not a longer name that starts the same
        self.groups: list[int] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token authentication with a token of its own, given to the nodes and to every driver through the
        # environment: Ray otherwise reads (or, for a local instance, writes) ~/.ray/auth_token, shared
        # by everyone on the machine.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout_s: float = 120.0) -> LocalRayCluster:
        try:
            for i, cpus in enumerate(self.cpus_per_node):
                self._ray_start(self._node_args(head=i == 0, cpus=cpus), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_args(self, head: bool, cpus: int) -> list[str]:
        # Ray replaces 127.0.0.1 by this machine's own address (so other machines could join); the traffic
        # still never leaves the machine. Every port Ray would otherwise take at a fixed default is chosen
        # free here, so that two clusters (two developers' tests) can run side by side.
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", f"--object-store-memory={self.object_store_bytes}",
                  "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}"]
        if not head:
            return ["start", f"--address={self.address}", *common]
        return ["start", "--head", f"--port={self.port}", f"--temp-dir={self.temp}", "--include-dashboard=false",
                f"--dashboard-port={free_port()}", *common]

    def _ray_start(self, args: list[str], timeout_s: float) -> None:
        proc = subprocess.Popen([self.ray, *args], env={**os.environ, **self.env}, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)  # its session's process group: every daemon it starts
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise RuntimeError(f"`ray {' '.join(args[:2])}` did not finish within {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"`ray {' '.join(args[:2])}` failed ({proc.returncode}): {out[-2000:]}")

    def processes(self) -> list[int]:
        """Live processes of this cluster: in its process groups, or running from its temp folder."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            ours = (int(pgrp) in self.groups and "ray" in cmdline.lower()) or re.search(self._in_temp, cmdline)
            if state != "Z" and ours:
                found.append(int(entry))
        return found

    def stop(self, grace_s: float = 3.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        shutil.rmtree(self.temp, ignore_errors=True)
