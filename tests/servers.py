"""Run the test suite against throwaway PostgreSQL and Redis servers.

`python -m tests.servers [pytest args]` installs what is missing (Redis, Chromium; PostgreSQL 15 is expected
under /usr/lib/postgresql/15/bin), starts both servers on free ports in a temporary folder, runs pytest with
DATABASE_URL, CELERY_BROKER_URL and REDIS_URL pointing at them, stops them whatever happened, and exits with
pytest's status.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# binary -> Debian package; prometheus scrapes a live server in tests/inference/test_e2e_observability.py,
# `ip` puts a worker on a network of its own in tests/inference/test_e2e_worker_pools.py.
APT_PACKAGES = {
    "redis-server": "redis-server",
    "chromium": "chromium",
    "prometheus": "prometheus",
    "openssl": "openssl",  # the webhook tests' certificate authority
    "ip": "iproute2",
    "bwrap": "bubblewrap",  # the sandbox of runners and upload checks (`make system` has it for `make run`)
}
APT_LISTS = Path("/var/lib/apt/lists")


def log(message: str) -> None:
    print(f"[test servers] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_root() -> bool:
    return os.geteuid() == 0


def install_missing() -> None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # `ip` lives in sbin, off a user's PATH
    missing = [pkg for binary, pkg in APT_PACKAGES.items() if shutil.which(binary, path=path) is None]
    if not (PG_BIN / "postgres").exists():
        missing.append("postgresql-15")
    if not missing:
        return
    if not is_root():
        sys.exit(f"Missing system packages {missing}; install them with apt-get (needs root).")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Once: `make system` may have just updated the lists.
    if not APT_LISTS.is_dir() or time.time() - APT_LISTS.stat().st_mtime > 3600:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    # PostgreSQL refuses to run as root; as root we hand the cluster to the postgres user.
    if is_root():
        command = " ".join(_quote(a) for a in args)
        return subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], **kwargs)
    return subprocess.run(args, **kwargs)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


class PostgresServer:
    def __init__(self, root: Path):
        self.root = root / "postgres"
        self.data = self.root / "data"
        self.port = free_port()

    def start(self) -> str:
        self.root.mkdir()
        if is_root():
            shutil.chown(self.root, "postgres", "postgres")
        as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.start_again()
        return f"postgres://postgres@127.0.0.1:{self.port}/modelport"

    def start_again(self) -> None:
        """Start the cluster (again, after `stop()`: tests of an outage), on the same port and data."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


class RedisServer:
    def __init__(self, root: Path):
        self.root = root / "redis"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.root.mkdir()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=open(self.root / "log", "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def stop_on_sigterm(signum, frame) -> None:
    # SIGTERM (a CI timeout, `kill`) unwinds through main()'s `finally`, so the servers are stopped too.
    raise SystemExit(128 + signum)


def main(pytest_args: list[str]) -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    install_missing()
    root = Path(tempfile.mkdtemp(prefix="modelport-test-"))
    os.chmod(root, 0o755)  # noqa: S103  (the postgres user must reach its cluster folder inside)
    postgres, redis = PostgresServer(root), RedisServer(root)
    pytest: subprocess.Popen | None = None
    try:
        database_url = postgres.start()
        redis_url = redis.start()
        log(f"PostgreSQL on port {postgres.port}, Redis on port {redis.port}, in {root}")
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=f"{redis_url}/0",
            REDIS_URL=f"{redis_url}/1",
            SECRET_KEY="test-secret-key-not-for-production",
            DEBUG="0",
            ALLOWED_HOSTS="localhost,127.0.0.1,testserver",
            MODELPORT_DATA_DIR=str(root / "data"),
            MODELPORT_TEST_SERVERS="1",
        )
        pytest = subprocess.Popen([sys.executable, "-m", "pytest", *pytest_args], env=env)
        return pytest.wait()
    finally:
        if pytest is not None and pytest.poll() is None:
            pytest.terminate()
            pytest.wait(30)
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
