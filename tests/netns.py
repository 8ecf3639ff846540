"""Another machine, as far as the network goes: a network namespace joined to this one by a veth pair.

Processes started in it (`command`) have their own loopback; they reach the suite's servers (which listen on
127.0.0.1 here) only through `tests.forwarder`, listening on this end of the pair. Needs root and `ip`.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path


def run(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class IsolatedHost:
    def __init__(self, tag: str, log_path: Path):
        self.name = f"mp-{tag}"
        self.outside = f"vh-{tag}"[:15]
        self.inside = f"vn-{tag}"[:15]
        subnet = random.randrange(0, 64) * 4  # noqa: S311 - a /30 of 10.233.<n>, for this test only
        third = random.randrange(1, 250)  # noqa: S311
        self.host_address = f"10.233.{third}.{subnet + 1}"
        self.own_address = f"10.233.{third}.{subnet + 2}"
        self.log_path = log_path
        self.forwarder: subprocess.Popen | None = None

    def start(self, ports: list[int]) -> IsolatedHost:
        run("netns", "add", self.name)
        run("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        run("link", "set", self.inside, "netns", self.name)
        run("addr", "add", f"{self.host_address}/30", "dev", self.outside)
        run("link", "set", self.outside, "up")
        run("netns", "exec", self.name, "ip", "addr", "add", f"{self.own_address}/30", "dev", self.inside)
        run("netns", "exec", self.name, "ip", "link", "set", self.inside, "up")
        run("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        self.forwarder = subprocess.Popen(
            [sys.executable, "-m", "tests.forwarder", self.host_address, *map(str, ports)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        for port in ports:
            self._wait_listening(port)
        return self

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host_address, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the forwarder to port {port} did not start")

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def stop(self) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.terminate()
            self.forwarder.wait(10)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def available() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "ip"], capture_output=True).returncode == 0
