"""Shared fixtures: personas (alice owns things, bob is another user) and live processes (a Celery worker)."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"


def pytest_report_header(config):
    from django.db import connection

    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    cache = "redis" if settings.REDIS_URL else "in-process memory"
    return f"modelport: database {connection.vendor}, broker {broker}://, cache {cache}"


def pytest_configure(config):
    if os.environ.get("MODELPORT_TEST_SERVERS") != "1":
        pytest.exit(
            "The suite runs against real PostgreSQL and Redis servers: run it with `make test` "
            "(or `python -m tests.servers [pytest args]`).",
            returncode=4,
        )
    logging.getLogger().addHandler(key_leak_watch)
    flush_again_after_a_deadlock()


def flush_again_after_a_deadlock(attempts: int = 5) -> None:
    """The flush between transactional tests TRUNCATEs every table. A live worker's periodic write (its reaper
    runs whatever the test did) can deadlock with it, and PostgreSQL then aborts one of the two: when that is
    the flush, it is run again rather than leaving the next test a dirty database."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle

    def handle_with_retries(self, **options):
        for attempt in range(1, attempts + 1):
            try:
                return handle(self, **options)
            except CommandError as exc:
                database_error = getattr(exc.__cause__, "__cause__", None)
                if getattr(database_error, "pgcode", None) != "40P01" or attempt == attempts:
                    raise
                time.sleep(0.1 * attempt)

    flush.Command.handle = handle_with_retries


# --- no log line of the suite holds a full API key -------------------------------------------------------
# Keys are `mp_<8 hex prefix>_<43 url-safe characters>`: the prefix may be logged, never the whole key.
FULL_API_KEY = re.compile(r"mp_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}")


class KeyLeakWatch(logging.Handler):
    """Sees every log record of the test process, formatted with its fields, and keeps those holding a key."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        from portal.logs import PlainFormatter

        self.setFormatter(PlainFormatter())
        self.leaks: list[str] = []

    def emit(self, record):
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not written either
            return
        if FULL_API_KEY.search(line):
            self.leaks.append(line)


key_leak_watch = KeyLeakWatch()


def key_leaks_in_child_logs(root: Path) -> list[str]:
    """Lines holding a full key in the logs of the servers the suite started (gunicorn, workers)."""
    leaks = []
    for path in root.rglob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if FULL_API_KEY.search(line):
                leaks.append(f"{path.name}: {line}")
    return leaks


def pytest_sessionfinish(session, exitstatus):
    """Fails the run if any log line, of this process or of a server it started, held a full API key."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    leaks = list(key_leak_watch.leaks)
    if factory is not None:
        leaks += key_leaks_in_child_logs(factory.getbasetemp())
    if leaks:
        masked = [FULL_API_KEY.sub(lambda m: m.group(0)[:11] + "…", line)[:300] for line in leaks[:10]]
        print("\nA full API key appeared in these log lines:\n" + "\n".join(masked))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def fresh_process_cache():
    # Rows are recreated for every test: copies of keys and limits from an earlier test would be stale.
    from portal import process_cache

    process_cache.clear_copies()
    yield
    process_cache.clear_copies()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def database_url_for_test_db() -> str:
    from django.db import connection

    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


# The environment as the suite started: servers shared by the whole session get this one, never a test's
# (a test may set variables for servers of its own, and a session server may start during that test).
SESSION_ENVIRON = dict(os.environ)


class ChildProcess:
    """A server the tests start in its own process group, on the test database, logging to `log_path`.
    Its environment is the test process's as it is when it starts, or `environ`."""

    def __init__(self, log_path: Path, environ: dict[str, str] | None = None):
        self.log_path = log_path
        self.environ = environ
        self.process: subprocess.Popen | None = None

    def spawn(self, command: list[str], extra_environ: dict | None = None) -> None:
        base = os.environ if self.environ is None else self.environ
        env = dict(base, DATABASE_URL=database_url_for_test_db(), PYTHONUNBUFFERED="1")
        env.update(extra_environ or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)


class WorkerProcess(ChildProcess):
    """A real `celery -A portal worker` in a child process, pointed at the test database."""

    def __init__(self, log_path: Path, extra_args: list[str] | None = None, environ=None):
        super().__init__(log_path, environ)
        self.extra_args = extra_args or []
        # Its own node name (the last --hostname wins), so the readiness ping is answered by it and no other.
        names = [f"test-worker-{uuid.uuid4().hex[:8]}@%h"]
        pairs = zip(self.extra_args, self.extra_args[1:], strict=False)
        names += [value for flag, value in pairs if flag == "--hostname"]
        self.hostname = names[-1]
        self.node = self.hostname.replace("%h", socket.gethostname())

    def start(self) -> None:
        self.spawn(
            [
                "celery",
                "-A",
                "portal",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                *self.extra_args,
                "--hostname",
                self.hostname,
            ]
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        from portal.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.log()}")
            if app.control.ping(destination=[self.node], timeout=0.5):
                return
        raise RuntimeError(f"the worker did not answer a ping in {timeout} s:\n{self.log()}")


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A live Celery worker for the whole session; tests that use it need `transactional_db`."""
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log", environ=SESSION_ENVIRON)
    worker.start()
    yield worker
    worker.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer(ChildProcess):
    """The web on the test database, several worker processes; `url` is its address.

    By default the data plane (`python manage.py dataplane`, as `make run` serves), which answers every path;
    `server="gunicorn"` is the control plane alone (`gunicorn portal.wsgi`)."""

    def __init__(self, log_path: Path, workers: int = 2, threads: int = 8, environ=None, server="dataplane"):
        super().__init__(log_path, environ)
        self.workers = workers
        self.threads = threads
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.server == "gunicorn":
            return [
                "gunicorn",
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--worker-class",
                "gthread",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--timeout",
                "120",
                "--no-control-socket",
            ]
        return [
            "django",
            "dataplane",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def serving_pids(self) -> list[int]:
        """The processes that answer requests: the workers of a master, or the server itself when it has none
        (uvicorn with one worker)."""
        pid = self.process.pid
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return children or [pid]

    def start(self) -> None:
        import requests

        self.spawn(self.command(), extra_environ={"DATA_PLANE_SITE_THREADS": str(self.threads)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web server exited:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"the web server did not come up:\n{self.log()}")


@pytest.fixture(scope="session")
def live_web(django_db_setup, django_db_blocker, tmp_path_factory):
    """A live multi-process web server; tests that use it need `transactional_db` (rows must be committed)."""
    server = WebServer(tmp_path_factory.mktemp("web") / "gunicorn.log", environ=SESSION_ENVIRON)
    server.start()
    yield server
    server.stop()


class S3Server(ChildProcess):
    """moto's standalone S3-compatible server on a free port, reached over HTTP like any S3 (in memory)."""

    ACCESS = {"AWS_ACCESS_KEY_ID": "modelport-test", "AWS_SECRET_ACCESS_KEY": "modelport-test-secret"}

    def __init__(self, log_path: Path):
        super().__init__(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        import requests

        self.spawn(["moto.server", "-H", "127.0.0.1", "-p", str(self.port)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 server exited:\n{self.log()}")
            try:
                requests.get(self.url, timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"the S3 server did not come up:\n{self.log()}")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.ACCESS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.ACCESS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        import uuid

        name = f"models-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_env(self, bucket: str) -> dict[str, str]:
        """What a web or worker process needs to keep its model files in `bucket` (API.md's MODEL_STORAGE)."""
        return {
            "MODEL_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.url,
            "AWS_S3_REGION_NAME": "us-east-1",
            **self.ACCESS,
        }

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def unfinished_uploads(self, bucket: str) -> list[str]:
        listed = self.client().list_multipart_uploads(Bucket=bucket)
        return [item["Key"] for item in listed.get("Uploads", [])]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def settle_worker_writes(request):
    """Transactional tests end once the worker has written what it was given (interactive records are written
    in batches), so the database flush between tests never races those writes (a TRUNCATE deadlock)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction") or not settings.REDIS_URL:
        yield
        return
    request.getfixturevalue("transactional_db")  # requested here, so it is flushed after this teardown
    yield
    import redis

    connection = redis.Redis.from_url(settings.REDIS_URL)  # tests may point the app client elsewhere
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and records_pending_of_live_workers(connection):
        time.sleep(0.05)
    connection.close()


def records_pending_of_live_workers(connection) -> bool:
    """Records waiting to be written by a running worker, whatever its key prefix (tests start workers with
    their own); a stopped worker's prefix has no heartbeat, and nothing will write what it left."""
    prefixes = [key[: -len(b"alive")] for key in connection.keys("*alive")]
    # `queue.records_pending()` of each prefix: an entry leaves the stream once it is written.
    return any(connection.xlen(prefix + b"records:stream") for prefix in prefixes)


class ServingStack:
    """A deployment of its own: gunicorn and a Celery worker sharing a fresh metrics folder, with their own
    Redis key prefix and job queue (so the session's worker takes none of their requests), logging JSON.
    `env` adds to their environment (e.g. INFERENCE_RUNNER_MEMORY_MB)."""

    def __init__(self, root: Path, **env: str):
        import uuid

        tag = uuid.uuid4().hex[:8]
        self.root = root
        self.metrics_dir = root / "metrics"  # the deployment's folder, empty as it starts
        self.metrics_dir.mkdir()
        self.env = {
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "INFERENCE_REDIS_PREFIX": f"mp:stack-{tag}:",
            "INFERENCE_JOB_QUEUE": f"stack-{tag}",
            "LOG_FORMAT": "json",
            **env,
        }
        self.tag = tag
        self.web = WebServer(root / "gunicorn.log")
        self.worker = WorkerProcess(root / "worker.log", ["-Q", f"stack-{tag}", "--hostname", f"{tag}@%h"])

    def start(self) -> ServingStack:
        import requests

        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            self.worker.start()
            self.web.start()
        deadline = time.monotonic() + 60
        while requests.get(f"{self.web.url}/v2/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"the stack never got ready:\n{self.worker.log()}"
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in (self.web.log_path, self.worker.log_path)
        )
