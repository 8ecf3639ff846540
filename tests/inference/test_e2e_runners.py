"""Runners under hostile models: memory and time limits, crashes, isolation, fairness across models, and the
ledger's promise that every admitted request ends in exactly one record, counted once.

Each test runs its own worker (own Celery queue, own Redis key prefix) so the shared one is not disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from django.conf import settings as django_settings
from django.db.models import Sum

from inference.models import Prediction
from inference.scheduling import queue
from portal.models import UsageDay
from portal.quotas import current_windows
from portal.services import quota_set
from tests.conftest import WebServer, WorkerProcess

from . import builders
from .conftest import post_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNNERS = 3
SLOW_FOREVER = {"inputs": {"x": [0.0], "n": [10**12]}}
DIGITS_BODY = {"inputs": {"pixels": [[0.5] * 64]}}


@pytest.fixture
def own_worker(monkeypatch, settings, tmp_path, django_db_setup):
    """Start a dedicated worker with the given environment; the test process (the web) points at it."""
    workers = []

    def start(**env) -> WorkerProcess:
        tag = uuid.uuid4().hex[:8]
        job_queue, prefix = f"runners-{tag}", f"mp:runners-{tag}:"
        for name, value in {
            "INFERENCE_REDIS_PREFIX": prefix,
            "PREDICTION_REAPER_INTERVAL": "0.5",
            "INFERENCE_RUNNERS": str(RUNNERS),  # the default (cores + 1), fixed so tests can count on it
            **env,
        }.items():
            monkeypatch.setenv(name, value)
        settings.INFERENCE_JOB_QUEUE, settings.INFERENCE_REDIS_PREFIX = job_queue, prefix
        worker = WorkerProcess(tmp_path / f"worker-{tag}.log", ["-Q", job_queue, "--hostname", f"{tag}@%h"])
        worker.start()
        workers.append(worker)
        wait_for(queue.serving, 120, lambda: f"the worker's supervisor never served: {alive_keys()}")
        wait_for(
            lambda: len(runner_pids(worker)) == RUNNERS,
            60,
            lambda: f"{len(runner_pids(worker))} of {RUNNERS} runners started:\n{worker.log()[-4000:]}",
        )
        return worker

    yield start
    for worker in workers:
        worker.stop()


def alive_keys() -> str:
    import redis
    from django.conf import settings as current

    connection = redis.Redis.from_url(current.REDIS_URL)
    return f"{current.INFERENCE_REDIS_PREFIX!r} {connection.keys('*alive*')}"


RUNNER_COMMAND = sys.executable.encode() + b"\0-m\0inference.runners.runner\0"


def runner_pids(worker: WorkerProcess) -> list[int]:
    """The worker's runners: below it (under bwrap and its init, in their own PID namespace), started
    (`confine.py` has exec'd the runner itself), not being set up."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue

    def below_worker(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == worker.process.pid:
                return True
        return False

    runners = [pid for pid, command in commands.items() if command.startswith(RUNNER_COMMAND)]
    return [pid for pid in runners if below_worker(pid)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busiest_runner(pids) -> int | None:
    """The runner that used most of the last second of CPU, if it clearly used more than the others."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(1)
    used = sorted(((cpu_seconds(pid) - seconds, pid) for pid, seconds in before.items()), reverse=True)
    (most, pid), rest = used[0], [seconds for seconds, _ in used[1:]]
    return pid if most > 0.05 and most > 3 * max(rest, default=0) else None


def resident_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def wait_for(predicate, timeout: float, message):
    """Wait until `predicate()` is true; `message` may be a callable that describes the state at the end."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.05)


def ended(prediction_id) -> Prediction | None:
    prediction = Prediction.objects.filter(id=prediction_id).first()
    return prediction if prediction and prediction.status in {"succeeded", "failed", "canceled"} else None


@pytest.fixture(autouse=True)
def generous_quotas(alice, bob):
    for user in (alice, bob):
        quota_set(user=user, requests_per_minute=100_000, requests_per_day=1_000_000)


def timed_call(client, url, body, key) -> tuple[int, float]:
    started = time.monotonic()
    response = post_json(client, url, body, key)
    return response.status_code, time.monotonic() - started


def test_a_runner_has_no_secrets_and_no_database_connection(own_worker):
    worker = own_worker()
    database = django_settings.DATABASES["default"]
    secrets = [django_settings.SECRET_KEY, django_settings.REDIS_URL, django_settings.CELERY_BROKER_URL]
    secrets += [database["PASSWORD"]] if database.get("PASSWORD") else []
    for pid in runner_pids(worker):
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        names = {item.split("=", 1)[0] for item in environ.split("\0") if item}
        assert not names & {"DATABASE_URL", "SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "METRICS_TOKEN"}
        assert not any(secret and secret in environ for secret in secrets)
        # Its one socket is the Unix socket its pool hands model files over; no TCP connection of any kind.
        unix_sockets = {
            line.split()[6] for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
        }
        sockets = [link[len("socket:[") : -1] for link in open_files(pid) if link.startswith("socket:")]
        assert len(sockets) == 1 and Path(f"/proc/{pid}/net/tcp").read_text().count("\n") == 1
        assert (
            sockets[0] in unix_sockets or not unix_sockets
        )  # (a socketpair is listed only where it was made)


def test_a_runner_runs_unprivileged_without_network_and_sees_only_the_runtime(own_worker):
    worker = own_worker()
    listener = socket.create_server(("127.0.0.1", 0))  # stands for the web, Redis or PostgreSQL
    port = listener.getsockname()[1]
    try:
        for pid in runner_pids(worker):
            status = dict(
                line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
            assert int(status["Uid"].split()[0]) != 0 and int(status["Gid"].split()[0]) != 0
            assert status["CapEff"].strip() == "0000000000000000"
            assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
            for namespace in ("net", "pid", "mnt"):
                assert os.readlink(f"/proc/{pid}/ns/{namespace}") != os.readlink(f"/proc/self/ns/{namespace}")
            # From inside its network namespace, the web's port is unreachable: there is no route at all.
            attempt = subprocess.run(
                [
                    "nsenter",
                    f"--net=/proc/{pid}/ns/net",
                    sys.executable,
                    "-c",
                    f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert attempt.returncode != 0 and "Error" in attempt.stderr, attempt.stderr
            # Its filesystem: the runtime, read-only; nothing of the project but the runner's own code, no
            # data folder, no stored model, no database.
            root = Path(f"/proc/{pid}/root")
            runtime = {
                "bin",
                "dev",
                "etc",
                "lib",
                "lib64",
                "proc",
                "root",
                "sbin",
                "sys",
                "tmp",
                "usr",
            }
            # plus the top folders of the project's checkout and of the Python installation, wherever they are
            places = (django_settings.BASE_DIR, sys.prefix, sys.base_prefix)
            runtime |= {Path(place).parts[1] for place in places}
            assert {entry.name for entry in root.iterdir()} <= runtime
            project = root / Path(django_settings.BASE_DIR).relative_to("/")
            assert {entry.name for entry in project.iterdir()} - {".venv"} == {"inference", "marketplace"}
            assert not (project / "portal").exists()
            for private in (
                django_settings.MEDIA_ROOT,
                django_settings.INFERENCE_MODEL_CACHE_DIR,
                "/etc/shadow",
            ):
                assert not (root / Path(private).relative_to("/")).exists(), private
            assert {entry.name for entry in (root / "etc").iterdir()} <= {"ld.so.cache", "localtime"}
    finally:
        listener.close()


def open_files(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed since it was listed (the runner reads /proc/self/statm)
            pass
    return links


def test_an_answer_over_the_output_limit_fails_clearly_and_the_next_call_succeeds(
    client, alice, alice_key, own_worker
):
    from onnx import TensorProto, helper

    own_worker(INFERENCE_MAX_OUTPUT_MB="1")
    # x repeated n times: a 4-byte input, an answer of 4·n bytes.
    builders.publish(
        owner=alice,
        name="flood",
        data=builders.onnx_model(
            [helper.make_node("Tile", ["x", "n"], ["y"])],
            [("x", TensorProto.FLOAT, [1]), ("n", TensorProto.INT64, [1])],
            [("y", TensorProto.FLOAT, [-1])],
        ),
    )
    url = "/api/v1/models/alice/flood/predict"
    flood = post_json(client, url, {"inputs": {"x": [1.5], "n": [1_000_000]}}, alice_key)
    assert flood.status_code < 500, flood.content
    assert flood.json()["status"] == "failed"
    assert "larger than the 1 MB a prediction may return" in flood.json()["error"]
    small = post_json(client, url, {"inputs": {"x": [1.5], "n": [3]}}, alice_key)
    assert small.status_code == 200 and small.json()["outputs"][0]["data"] == [1.5, 1.5, 1.5], small.content


def test_a_model_over_the_memory_limit_fails_clearly_and_other_users_keep_their_answers(
    client, alice, bob, alice_key, bob_key, own_worker
):
    worker = own_worker(INFERENCE_RUNNER_MEMORY_MB="400", INFERENCE_RUNNER_RSS_BUDGET_MB="300")
    builders.publish(owner=alice, name="hungry", data=builders.memory_hungry_onnx())
    builders.publish(owner=bob, name="digits", data=builders.digits_onnx())
    bob_body, bob_url = DIGITS_BODY, "/api/v1/models/bob/digits/predict"
    assert timed_call(client, bob_url, bob_body, bob_key)[0] == 200

    answers = {}

    def hungry_call():
        from django.test import Client

        answers["hungry"] = post_json(
            Client(), "/api/v1/models/alice/hungry/predict", {"inputs": {"n": [2_000_000_000]}}, alice_key
        )

    thread = threading.Thread(target=hungry_call)
    thread.start()
    during = []
    while thread.is_alive():
        during.append(timed_call(client, bob_url, bob_body, bob_key))
    thread.join()
    after = [timed_call(client, bob_url, bob_body, bob_key) for _ in range(3)]

    # The runner's memory limit, like its time limit, is a 503 that names it, not the caller's bad input.
    body = answers["hungry"].json()
    assert answers["hungry"].status_code == 503 and answers["hungry"]["Retry-After"] == "1", body
    assert "more memory than a runner may use (400 MB)" in body["detail"]
    for status, seconds in during + after:
        assert status == 200 and seconds < 5
    for pid in runner_pids(worker):
        assert resident_mb(pid) < 300


def test_a_stuck_model_ends_with_a_time_limit_error_while_other_models_keep_answering(
    client, alice, bob, alice_key, bob_key, own_worker
):
    own_worker(PREDICTION_TIME_LIMIT="3")
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    builders.publish(owner=bob, name="digits", data=builders.digits_onnx())
    bob_body, bob_url = DIGITS_BODY, "/api/v1/models/bob/digits/predict"
    assert timed_call(client, bob_url, bob_body, bob_key)[0] == 200

    answers = {}

    def stuck_call():
        from django.test import Client

        started = time.monotonic()
        response = post_json(Client(), "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key)
        answers["stuck"] = (response, time.monotonic() - started)

    threads = [threading.Thread(target=stuck_call) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both stuck calls are queued or running now
    during = []
    while any(thread.is_alive() for thread in threads):
        during.append(timed_call(client, bob_url, bob_body, bob_key))
    response, seconds = answers["stuck"]
    assert response.status_code == 503 and "ran past the 3 s time limit" in response.json()["detail"]
    assert seconds < 3 * 2 + 2  # the second stuck call waited for the first: one model holds one runner
    # Served by the runner the stuck model may not take, never queued behind it.
    assert during and all(status == 200 and took < 2 for status, took in during), during


def test_killing_a_runner_mid_batch_fails_that_batch_only_and_the_next_call_succeeds(
    client, alice, alice_key, own_worker
):
    worker = own_worker()
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    v2_body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [10**12]},
        ]
    }
    answers = {}

    def doomed_call():
        from django.test import Client

        answers["doomed"] = post_json(Client(), "/v2/models/alice/slow/infer", v2_body, alice_key)

    thread = threading.Thread(target=doomed_call)
    thread.start()
    before = set(runner_pids(worker))
    busy = wait_for(lambda: busiest_runner(before), 20, "no runner got busy")
    os.kill(busy, signal.SIGKILL)
    thread.join(20)
    response = answers["doomed"]
    assert response.status_code == 503 and "died" in response.json()["error"]
    v2_body["inputs"][1]["data"] = [3]
    response = post_json(client, "/v2/models/alice/slow/infer", v2_body, alice_key)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [3.0]
    wait_for(lambda: len(runner_pids(worker)) == len(before), 30, "the runner was not replaced")


def test_every_admitted_request_ends_in_exactly_one_record_counted_once(
    client, alice, alice_key, own_worker, settings, monkeypatch, tmp_path
):
    own_worker(PREDICTION_TIME_LIMIT="2", PREDICTION_QUEUED_MAX_SECONDS="4")
    builders.publish(owner=alice, name="mixed", data=builders.digits_onnx())
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    builders.publish(
        owner=alice,
        name="broken",
        data=b"not an onnx file",
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}], "outputs": []},
    )
    mixed_body = DIGITS_BODY
    v2_mixed = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    asynchronous = {"HTTP_PREFER": "respond-async"}
    ids = []

    # sync, on both APIs
    response = post_json(client, "/api/v1/models/alice/mixed/predict", mixed_body, alice_key)
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    ids.append(response.json()["id"])
    response = post_json(client, "/v2/models/alice/mixed/infer", v2_mixed, alice_key)
    assert response.status_code == 200, response.content
    # async job
    response = post_json(client, "/api/v1/models/alice/mixed/predict", mixed_body, alice_key, **asynchronous)
    ids.append(response.json()["id"])
    # failed in the model
    response = post_json(client, "/api/v1/models/alice/broken/predict", {"inputs": {"x": [1.0]}}, alice_key)
    assert response.json()["status"] == "failed"
    # timed out
    response = post_json(client, "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key)
    assert response.status_code == 503 and "time limit" in response.json()["detail"]
    # canceled while running
    response = post_json(client, "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key, **asynchronous)
    running_id = response.json()["id"]
    wait_for(lambda: Prediction.objects.get(id=running_id).status == "running", 20, "never ran")
    assert (
        client.post(
            f"/api/v1/predictions/{running_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {alice_key}"
        ).json()["status"]
        == "canceled"
    )
    # canceled while queued, and reaped: jobs on a queue no worker consumes
    settings.INFERENCE_JOB_QUEUE = f"nobody-{uuid.uuid4().hex[:8]}"
    response = post_json(client, "/api/v1/models/alice/mixed/predict", mixed_body, alice_key, **asynchronous)
    queued_id = response.json()["id"]
    assert (
        client.post(
            f"/api/v1/predictions/{queued_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {alice_key}"
        ).json()["status"]
        == "canceled"
    )
    response = post_json(client, "/api/v1/models/alice/mixed/predict", mixed_body, alice_key, **asynchronous)
    reaped_id = response.json()["id"]
    # broker down: a web process whose task queue is out of reach
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    web = WebServer(tmp_path / "web-without-broker.log", workers=1, threads=2)
    web.start()
    try:
        response = requests.post(
            f"{web.url}/api/v1/models/alice/mixed/predict",
            json=mixed_body,
            headers={"Authorization": f"Bearer {alice_key}", "Prefer": "respond-async"},
            timeout=60,
        )
        assert response.status_code == 503 and "task queue" in response.json()["detail"]
    finally:
        web.stop()

    admitted = 9
    reaped = wait_for(lambda: ended(reaped_id), 30, "the reaper never failed the unstarted job")
    assert reaped.status == "failed" and "No worker" in reaped.error
    wait_for(
        lambda: (
            Prediction.objects.filter(user=alice).count() == admitted
            and not Prediction.objects.filter(user=alice, status__in=["queued", "running"]).exists()
            and not queue.records_pending()
        ),
        30,
        f"not every request ended in a record: {list(Prediction.objects.values_list('status', 'error'))}",
    )
    records = Prediction.objects.filter(user=alice)
    assert records.count() == admitted and all(p.charged for p in records)
    statuses = sorted(records.values_list("status", flat=True))
    assert statuses.count("succeeded") == 3 and statuses.count("canceled") == 2
    usage = UsageDay.objects.filter(user=alice).aggregate(
        requests=Sum("requests"), succeeded=Sum("succeeded")
    )
    assert usage == {"requests": admitted, "succeeded": 3}


def test_a_model_whose_queue_is_full_is_refused_503_while_other_models_answer(
    client, alice, bob, alice_key, bob_key, own_worker, settings
):
    # The stuck calls must outlast the refusals below on a loaded machine, yet end within the test.
    own_worker(PREDICTION_TIME_LIMIT="12")
    settings.INFERENCE_MODEL_QUEUE_MAX = 2
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    builders.publish(owner=bob, name="digits", data=builders.digits_onnx())
    answers = []

    def stuck_call():
        from django.test import Client

        answers.append(post_json(Client(), "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key))

    # Calls hold every runner the slow model may take; two more wait in its queue, which is then full.
    cap = RUNNERS - 1
    threads = [threading.Thread(target=stuck_call) for _ in range(cap + 2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    wait_for(lambda: waiting_calls("alice/slow") >= 2, 10, "the queue never filled")
    counted = {w.redis_key: w.used for w in current_windows(alice)}
    refused = post_json(client, "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key)
    assert refused.status_code == 503 and refused["Retry-After"] == "1"
    # A refusal costs no quota: the windows count what they counted before it.
    assert {w.redis_key: w.used for w in current_windows(alice)} == counted
    assert "requests waiting" in refused.json()["detail"]
    refused_v2 = post_json(
        client,
        "/v2/models/alice/slow/infer",
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]},
                {"name": "n", "datatype": "INT64", "shape": [1], "data": [10**12]},
            ]
        },
        alice_key,
    )
    assert refused_v2.status_code == 503 and refused_v2["Retry-After"] == "1"
    assert "requests waiting" in refused_v2.json()["error"]
    # While the slow model's calls hold its runners and fill its queue, another model's calls are served.
    assert post_json(client, "/api/v1/models/bob/digits/predict", DIGITS_BODY, bob_key).status_code == 200
    for thread in threads:
        thread.join(60)
    # Refused requests are recorded as failed, like every admitted request, though they cost no quota.
    refused_records = Prediction.objects.filter(user=alice, error__contains="queue was full")
    assert refused_records.count() == 2 and all(p.status == "failed" for p in refused_records)


def waiting_calls(model: str) -> int:
    """The calls waiting for a runner, as the operations page shows them (the worker publishes them)."""
    from inference.operations import operations_status

    queues = operations_status()["queues"] or []
    return next((row["depth"] for row in queues if row["model"] == model), 0)


def slow_model_sha(user) -> str:
    from marketplace.models import ModelVersion

    return ModelVersion.objects.get(model__owner=user, model__name="slow").sha256


def test_a_call_reaches_this_hosts_runner_pool_over_its_link(alice, own_worker):
    from inference.services import prediction_submit, prediction_wait, target_find

    own_worker()
    builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    target = target_find(owner="alice", name="digits", number=None, user=alice, to_run=True)
    submission = prediction_submit(
        user=alice,
        api_key=None,
        target=target,
        inputs={"pixels": np.full((1, 64), 0.5, dtype=np.float32)},
        source=Prediction.Source.API,
        bytes_in=0,
    )
    # Sent to the worker's supervisor on this host, not queued in Redis nor made a job.
    assert submission.reply is not None and submission.call is None and submission.prediction is None
    outcome = prediction_wait(
        submission=submission, timeout=30, fall_back_to_job=False, user=alice, api_key=None
    )
    assert outcome.status == "succeeded", outcome.error
    assert set(outcome.outputs) == {spec["name"] for spec in target.signature["outputs"]}
    wait_for(
        lambda: Prediction.objects.filter(id=submission.id, status="succeeded").exists(),
        30,
        "the supervisor's record never landed",
    )


def test_a_call_whose_runner_pool_goes_away_is_answered_503_and_recorded_once(alice, alice_key, own_worker):
    worker = own_worker(PREDICTION_TIME_LIMIT="60")
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    answers = []

    def doomed_call():
        from django.test import Client

        answers.append(post_json(Client(), "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key))

    thread = threading.Thread(target=doomed_call)
    thread.start()
    runners = runner_pids(worker)
    try:
        wait_for(lambda: busiest_runner(runners), 20, "the slow call never ran")
        os.kill(worker.process.pid, signal.SIGKILL)  # the supervisor, and with it the link, is gone
        thread.join(30)
    finally:
        for pid in runners:  # the runners it left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert answers[0].status_code == 503 and "went away" in answers[0].json()["detail"]
    record = Prediction.objects.get(user=alice)
    assert record.status == "failed" and "went away" in record.error
    assert UsageDay.objects.filter(user=alice).aggregate(n=Sum("requests"))["n"] == 1


def test_a_job_waiting_for_a_busy_models_runner_is_not_reaped(client, alice, alice_key, own_worker):
    """The reaper fails what runs past the time limit (2 s here, plus 1 s of margin). A job that a worker has
    taken but that waits for a runner behind the model's other calls is not running yet: it is run, not
    reaped."""
    # One call per runner call: the job is not batched with the calls that run past the limit.
    own_worker(PREDICTION_TIME_LIMIT="2", PREDICTION_REAP_MARGIN="1", INFERENCE_MAX_BATCH="1")
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    answers = []

    def stuck_call():
        from django.test import Client

        answers.append(post_json(Client(), "/api/v1/models/alice/slow/predict", SLOW_FOREVER, alice_key))

    # Six calls that each hold one of the model's two runners until the time limit: three rounds of 2 s.
    threads = [threading.Thread(target=stuck_call) for _ in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    queued = client.post(
        "/api/v1/models/alice/slow/predict",
        {"inputs": {"x": [1.0], "n": [3]}},
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice_key}", "Prefer": "respond-async"},
    )
    assert queued.status_code == 202, queued.content
    job_id = queued.json()["id"]
    ended = wait_for(
        lambda: Prediction.objects.filter(id=job_id, status__in=("succeeded", "failed")).first(),
        40,
        "the job never ended",
    )
    for thread in threads:
        thread.join(30)
    assert ended.status == "succeeded", ended.error
    assert ended.attempts == 1 and ended.queue_ms > 3000  # it waited longer than the reaper allows a run
    # The six ran into the time limit, the server's limit: 503s.
    assert [answer.status_code for answer in answers] == [503] * 6
