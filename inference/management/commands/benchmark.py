"""`python manage.py benchmark --url http://127.0.0.1:8000`: Modelport against its peers on a running server.

In one run, with one client (a thread per concurrent caller, each with its own keep-alive `http.client`
connection or `tritonclient.grpc` client, a warm-up, then a fixed number of requests shared), on two models it
builds (an MLP 64→128→10 and a ResNet-shaped CNN on a 3×96×96 image, both FP32, uploaded through
`POST /api/v1/models`), it measures:
- raw ONNX Runtime in this process, one thread;
- a BentoML service with adaptive batching on the same ONNX file (`pip install '.[bench]'`), started and
  stopped by the command;
- Modelport's `/api/v1` predict, `/v2` infer with JSON, and `/v2` infer with binary tensor data;
- Modelport's gRPC ModelInfer through `tritonclient.grpc` (`--grpc-url`, the gRPC server's address; a row
  says so when nothing answers there);
then a noisy neighbour (another user's model kept busy with ~10 s calls while the MLP's p50 is measured), and
what kernel confinement costs a runner (its start and a call, sandbox on and off). It prints one table, the
noisy-neighbour figures and issues 9's and 23's "Done when" checks as PASS/FAIL lines, and exits 0
either way: it is a measurement. It reads and writes the server's database directly (users, keys, quotas,
model rows), so run it with the server's settings.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import time
from dataclasses import dataclass
from io import StringIO
from urllib.parse import urlsplit

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from inference.benchmarking import bento, onnx_models
from inference.benchmarking.confinement import format_confinement, measure_confinement
from inference.benchmarking.grpc_load import GrpcTarget, grpc_unreachable, measure_grpc
from inference.benchmarking.load import Measurement, Target, measure_http, measure_onnxruntime
from inference.benchmarking.noisy import NoisyTenant
from inference.benchmarking.report import (
    API_V1,
    BENTOML,
    GRPC,
    RAW,
    V2_BINARY,
    V2_JSON,
    Noisy,
    Results,
    done_when_checks,
    format_noisy,
    format_table,
)
from inference.codec import tensor_to_bytes
from marketplace.models import Model, ModelVersion
from portal.models import ApiKey

BENCHMARK_USER = "benchmark"
NOISY_USER = "benchmark-noisy"  # the noisy tenant is another user with its own key, as in the issue
MLP, CNN = "MLP", "CNN"


@dataclass
class Case:
    label: str  # MLP or CNN, as in the table
    description: str
    slug: str  # owner/name on the server
    data: bytes
    input_name: str
    sample: np.ndarray
    levels: list[int]


class Progress:
    def __init__(self, total: int, out):
        self.total, self.done, self.out = total, 0, out

    def step(self, label: str) -> None:
        self.done += 1
        filled = int(30 * self.done / self.total)
        self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<40}")
        self.out.flush()
        if self.done == self.total:
            self.out.write("\n")


class Command(BaseCommand):
    help = (
        "Measure raw ONNX Runtime, BentoML (adaptive batching) and Modelport's /api/v1, /v2 (JSON, binary) "
        "and gRPC on an MLP and an image CNN, plus a noisy neighbour, against a running server."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--grpc-url",
            default=f"127.0.0.1:{settings.GRPC_PORT}",
            help="host:port of `manage.py grpcserver` (default: 127.0.0.1:$GRPC_PORT, 8001)",
        )
        parser.add_argument("--requests", type=int, default=1000, help="requests per measurement")
        parser.add_argument(
            "--seconds",
            type=float,
            default=60.0,
            help="stop a measurement after this long even if unfinished",
        )
        parser.add_argument(
            "--concurrency",
            default="",
            help="levels for both models, e.g. 1,16 (default: 1,16 for the MLP, 1,8 for the CNN)",
        )
        parser.add_argument("--noisy-seconds", type=float, default=10.0, help="length of each noisy call")
        parser.add_argument(
            "--noisy-callers", type=int, default=2, help="concurrent noisy calls kept running"
        )
        parser.add_argument(
            "--llm",
            action="store_true",
            help="instead: the SmolLM2 chat model (GGUF) in llama.cpp's own server and in Modelport's /v1",
        )
        parser.add_argument(
            "--llm-tokens", type=int, default=128, help="with --llm: max_tokens of each stream"
        )
        parser.add_argument(
            "--catalog",
            action="store_true",
            help="also time catalog list and search (seed first: seed_catalog --count 100000)",
        )
        parser.add_argument(
            "--catalog-size", type=int, help="with --catalog: first add synthetic models up to this many"
        )

    def handle(self, *args, url: str, catalog: bool, llm: bool, **options):
        if catalog:
            self.print_catalog(options["catalog_size"])
        url = url.rstrip("/")
        self.url, self.options = url, options
        if llm:
            self.benchmark_llm(options["llm_tokens"])
            return
        self.requests, self.max_seconds = options["requests"], options["seconds"]
        self.grpc_url = options["grpc_url"]
        if self.requests < 1:
            raise CommandError("--requests must be at least 1")
        try:
            override = [int(level) for level in options["concurrency"].split(",") if level.strip()]
        except ValueError as exc:
            raise CommandError(f"--concurrency takes numbers separated by commas: {exc}") from exc
        if any(level < 1 for level in override):
            raise CommandError("--concurrency levels must be at least 1")
        bento_missing = "" if bento.bentoml_installed() else f"BentoML is not installed: {bento.INSTALL_HINT}"
        if bento_missing:
            self.stderr.write(
                f"{bento_missing}\nThe BentoML rows are left out and the checks against them FAIL."
            )

        user, key = self.benchmark_user(BENCHMARK_USER)
        noisy_user, noisy_key = self.benchmark_user(NOISY_USER)
        cases = [
            Case(
                MLP,
                "64→128→10",
                f"{BENCHMARK_USER}/mlp",
                onnx_models.mlp(),
                onnx_models.MLP_INPUT,
                np.random.default_rng(0).random((1, 64), dtype=np.float32),
                override or [1, 16],
            ),
            Case(
                CNN,
                "ResNet-shaped, 3×96×96 input",
                f"{BENCHMARK_USER}/resnet-cnn",
                onnx_models.resnet_cnn(),
                onnx_models.CNN_INPUT,
                np.random.default_rng(1).random((1, *onnx_models.CNN_SHAPE), dtype=np.float32),
                override or [1, 8],
            ),
        ]
        for case in cases:
            self.publish(user, key, case.slug.split("/")[1], case.data, task="image-classification")
        self.publish(noisy_user, noisy_key, "slow", onnx_models.slow_model(), task="other")

        results = Results()
        if bento_missing:
            results.missing[BENTOML] = bento_missing
        steps = sum(1 + (0 if bento_missing else 1) * len(c.levels) + 4 * len(c.levels) for c in cases) + 3
        progress = Progress(steps, sys.stderr)
        for case in cases:
            self.measure_case(case, key, results, progress)
        noisy = self.noisy_neighbour(cases[0], key, noisy_key, progress)
        mlp = cases[0]
        confinement = measure_confinement(
            data=mlp.data, input_name=mlp.input_name, sample=mlp.sample, user=settings.INFERENCE_RUNNER_USER
        )
        progress.step("confinement")
        self.report(cases, results, noisy)
        self.stdout.write("")
        for line in format_confinement(confinement, mlp.slug):
            self.stdout.write(line)

    # --- language models -------------------------------------------------------------------------------

    def benchmark_llm(self, max_tokens: int) -> None:
        from inference.benchmarking import llm
        from inference.llm.generation import context_length_of
        from inference.llm.hosts import spec_for
        from marketplace.demo import smollm2_path

        user, key = self.benchmark_user(BENCHMARK_USER)
        path = smollm2_path()
        version = self.publish_gguf(user, key, "smollm2", path)
        spec = spec_for(sha256=version.sha256, path=str(path), context_length=context_length_of(version.id))
        self.stdout.write(
            f"{BENCHMARK_USER}/smollm2: SmolLM2-135M-Instruct, {path.stat().st_size / 2**20:.0f} MiB GGUF; "
            f"both servers with {spec.threads} threads, {spec.slots} slots of {spec.context} tokens; "
            f"max_tokens {max_tokens}, temperature 0"
        )
        body = llm.chat_body(f"{BENCHMARK_USER}/smollm2", max_tokens)
        with llm.llama_server(
            model=str(path), context=spec.context, slots=spec.slots, threads=spec.threads
        ) as llama_url:
            llama = llm.measure(llm.Endpoint.of(f"{llama_url}/v1/chat/completions"), body)
        modelport = llm.measure(
            llm.Endpoint.of(f"{self.url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}), body
        )
        self.stdout.write("")
        for line in llm.format_llm_table(llama, modelport):
            self.stdout.write(line)
        for name, result in ((llm.LLAMA, llama), (llm.MODELPORT, modelport)):
            if result.errors:
                self.stdout.write(f"{name}: {len(result.errors)} errors, the first: {result.errors[0]}")
        self.stdout.write("")
        self.stdout.write("Issue 24, Done when:")
        for check in llm.llm_checks(llama, modelport):
            self.stdout.write(check.line())

    def publish_gguf(self, user, key: str, name: str, path) -> ModelVersion:
        """The GGUF as `user`'s chat model `name`, uploaded through the API unless it already is."""
        import requests

        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        versions = ModelVersion.objects.filter(model__owner=user, model__name=name, sha256=digest)
        if not versions.filter(status=ModelVersion.Status.READY).exists():
            fields = {"name": name, "task": "text-generation"}
            upload = f"/api/v1/models/{user.username}/{name}/versions"
            if not Model.objects.filter(owner=user, name=name).exists():
                upload = "/api/v1/models"
            response = requests.post(
                f"{self.url}{upload}",
                headers={"Authorization": f"Bearer {key}"},
                data=fields if upload == "/api/v1/models" else {},
                files={"file": (f"{name}.gguf", data)},
                timeout=300,
            )
            if response.status_code not in (201, 202):
                raise CommandError(f"POST {upload} answered {response.status_code}: {response.text[:300]}")
            self.wait_ready(f"{user.username}/{name}", versions)
        return versions.filter(status=ModelVersion.Status.READY).order_by("-number").first()

    # --- setup ---------------------------------------------------------------------------------------------

    def benchmark_user(self, username: str):
        user, _ = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        _, key = ApiKey.issue(user=user, name="benchmark", scopes=["read", "predict", "upload"])
        call_command(
            "quota",
            username,
            "--requests-per-minute",
            "100000000",
            "--requests-per-day",
            "1000000000",
            "--compute-seconds-per-month",
            "1000000000",
            "--tokens-per-minute",
            "1000000000",
            "--tokens-per-day",
            "1000000000",
            stdout=StringIO(),
        )
        return user, key

    def publish(self, user, key: str, name: str, data: bytes, *, task: str) -> None:
        """Upload `data` through the API, as a new model or a new version, unless the latest ready version of
        `owner/name` is already these bytes (the models are built deterministically, so reruns reuse them).
        Nothing is deleted: a deleted model's usage rows would collide with today's (see the report)."""
        digest = hashlib.sha256(data).hexdigest()
        slug = f"{user.username}/{name}"
        versions = ModelVersion.objects.filter(model__owner=user, model__name=name)
        latest = versions.filter(status=ModelVersion.Status.READY).order_by("-number").first()
        if latest is not None and latest.sha256 == digest:
            self.stdout.write(f"{slug}: version {latest.number} is this model already")
            return
        if Model.objects.filter(owner=user, name=name).exists():
            path, fields = f"/api/v1/models/{slug}/versions", {}
        else:
            path, fields = "/api/v1/models", {"name": name, "task": task}
            if task == "image-classification":
                fields["labels"] = ",".join(str(i) for i in range(10))
        status, body = self.upload(key, path, fields, name, data)
        if status not in (201, 202):
            raise CommandError(f"POST {path} for {slug} answered {status}: {body[:300]}")
        self.stdout.write(f"{slug}: uploaded through POST {path}")
        self.wait_ready(slug, versions.filter(sha256=digest))

    def upload(self, key: str, path: str, fields: dict, name: str, data: bytes) -> tuple[int, str]:
        import requests

        try:
            response = requests.post(
                f"{self.url}{path}",
                headers={"Authorization": f"Bearer {key}"},
                data=fields,
                files={"file": (f"{name}.onnx", data)},
                timeout=120,
            )
        except requests.RequestException as exc:
            raise CommandError(f"the server at {self.url} does not answer: {exc}") from exc
        return response.status_code, response.text

    def wait_ready(self, slug: str, versions) -> None:
        deadline = time.monotonic() + 120
        while not versions.filter(status=ModelVersion.Status.READY).exists():
            rejected = versions.filter(status=ModelVersion.Status.REJECTED).order_by("-number").first()
            if rejected is not None:
                raise CommandError(f"{slug} was rejected at upload: {rejected.reason}")
            if time.monotonic() > deadline:
                raise CommandError(f"{slug} did not become ready within 120 s")
            time.sleep(0.5)

    # --- measuring -----------------------------------------------------------------------------------------

    def measure_case(self, case: Case, key: str, results: Results, progress: Progress) -> None:
        raw = measure_onnxruntime(case.data, {case.input_name: case.sample}, requests=max(self.requests, 200))
        results.add(case.label, RAW, 1, raw)
        progress.step(f"{case.label}: raw ONNX Runtime")
        if BENTOML not in results.missing:
            self.measure_bentoml(case, results, progress)
        modelport = self.modelport_targets(case, key)
        for path in (API_V1, V2_JSON, V2_BINARY):
            for level in case.levels:
                results.add(case.label, path, level, self.measure(modelport[path], level))
                progress.step(f"{case.label}: {path} x{level}")
        self.measure_grpc_rows(case, key, results, progress)

    def measure_grpc_rows(self, case: Case, key: str, results: Results, progress: Progress) -> None:
        unreachable = grpc_unreachable(self.grpc_url)
        if unreachable:
            reason = f"{unreachable}; start `python manage.py grpcserver` or pass --grpc-url"
            self.stderr.write(f"\n{case.label}: gRPC not measured: {reason}")
            results.missing[f"{GRPC} ({case.label})"] = reason
        target = GrpcTarget(
            self.grpc_url, case.slug, {case.input_name: case.sample}, {"authorization": f"Bearer {key}"}
        )
        for level in case.levels:
            if not unreachable:
                measurement = measure_grpc(
                    target, requests=self.requests, concurrency=level, max_seconds=self.max_seconds
                )
                results.add(case.label, GRPC, level, measurement)
            progress.step(f"{case.label}: {GRPC} x{level}")

    def measure_bentoml(self, case: Case, results: Results, progress: Progress) -> None:
        try:
            with bento.BentoServer(case.data) as server:
                target = Target(
                    "127.0.0.1",
                    server.port,
                    bento.API_ROUTE,
                    bento.json_body(case.sample),
                    {"Content-Type": "application/json"},
                )
                for level in case.levels:
                    results.add(case.label, BENTOML, level, self.measure(target, level))
                    progress.step(f"{case.label}: BentoML x{level}")
        except bento.BentoUnavailable as exc:
            self.stderr.write(f"\n{case.label}: BentoML could not be measured: {exc}")
            results.missing[f"{BENTOML} ({case.label})"] = str(exc).splitlines()[0]
            for _ in case.levels:
                progress.step(f"{case.label}: BentoML failed")

    def measure(self, target: Target, level: int) -> Measurement:
        return measure_http(target, requests=self.requests, concurrency=level, max_seconds=self.max_seconds)

    def modelport_targets(self, case: Case, key: str) -> dict[str, Target]:
        parts = urlsplit(self.url)
        host, port = parts.hostname, parts.port or 80
        auth = {"Authorization": f"Bearer {key}"}
        json_headers = {**auth, "Content-Type": "application/json"}
        sample = case.sample
        predict = json.dumps({"inputs": {case.input_name: sample.tolist()}}).encode()
        infer_json = json.dumps(
            {
                "inputs": [
                    {
                        "name": case.input_name,
                        "datatype": "FP32",
                        "shape": list(sample.shape),
                        "data": sample.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        data = tensor_to_bytes(sample)
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": case.input_name,
                        "datatype": "FP32",
                        "shape": list(sample.shape),
                        "parameters": {"binary_data_size": len(data)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        binary_headers = {
            **auth,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return {
            API_V1: Target(host, port, f"/api/v1/models/{case.slug}/predict", predict, json_headers),
            V2_JSON: Target(host, port, f"/v2/models/{case.slug}/infer", infer_json, json_headers),
            V2_BINARY: Target(host, port, f"/v2/models/{case.slug}/infer", header + data, binary_headers),
        }

    # --- noisy neighbour -----------------------------------------------------------------------------------

    def noisy_neighbour(self, quiet_case: Case, key: str, noisy_key: str, progress: Progress) -> Noisy:
        """The MLP's /api/v1 c1 p50 on a calm server, then while another user's slow model is kept busy."""
        noisy_seconds, callers = self.options["noisy_seconds"], self.options["noisy_callers"]
        slow_target = self.slow_target(noisy_key, self.trips_for(noisy_seconds, noisy_key))
        quiet_target = self.modelport_targets(quiet_case, key)[API_V1]
        quiet = self.measure(quiet_target, 1)
        progress.step("noisy neighbour: quiet p50")
        with NoisyTenant(slow_target, callers=callers, call_seconds=noisy_seconds) as tenant:
            time.sleep(1.0)  # the slow calls are admitted and running before the quiet model is measured
            # A window as long as a noisy call, not a number of requests: a fast server would otherwise be
            # measured only in the slow call's first second.
            noisy = measure_http(
                quiet_target,
                requests=sys.maxsize,
                concurrency=1,
                warmup=0,
                max_seconds=min(self.max_seconds, max(noisy_seconds, 5.0)),
            )
        progress.step("noisy neighbour: noisy p50")
        return Noisy(
            quiet=quiet,
            noisy=noisy,
            model=quiet_case.slug,
            path=API_V1,
            noisy_model=f"{NOISY_USER}/slow",
            noisy_callers=callers,
            noisy_call_seconds=tenant.durations,
            noisy_errors=tenant.errors,
        )

    def slow_target(self, noisy_key: str, trips: int) -> Target:
        parts = urlsplit(self.url)
        return Target(
            parts.hostname,
            parts.port or 80,
            f"/api/v1/models/{NOISY_USER}/slow/predict?wait=60",
            json.dumps({"inputs": {"x": [0.0], "n": [trips]}}).encode(),
            {"Authorization": f"Bearer {noisy_key}", "Content-Type": "application/json"},
        )

    def trips_for(self, seconds: float, noisy_key: str) -> int:
        """Loop trips that take about `seconds` on the server: timed here on one core, then checked with one
        call of about a second on the server (its runners may be slower or faster than this process)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = onnxruntime.InferenceSession(
            onnx_models.slow_model(), options, providers=["CPUExecutionProvider"]
        )
        sample_trips = 200_000
        began = time.perf_counter()
        session.run(None, {"x": np.zeros(1, np.float32), "n": np.array([sample_trips], np.int64)})
        per_trip = (time.perf_counter() - began) / sample_trips
        probe_trips = max(1, int(1.0 / per_trip))
        probe = self.slow_target(noisy_key, probe_trips)
        connection = probe.connect(timeout=90)
        try:
            began = time.perf_counter()
            connection.request("POST", probe.path, body=probe.body, headers=probe.headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                per_trip = (time.perf_counter() - began) / probe_trips
        except (OSError, http.client.HTTPException):
            pass  # keep the estimate from this process; the noisy calls report how long they took
        finally:
            connection.close()
        return max(1, int(seconds / per_trip))

    # --- output --------------------------------------------------------------------------------------------

    def report(self, cases: list[Case], results: Results, noisy: Noisy) -> None:
        write = self.stdout.write
        write("")
        for case in cases:
            raw = results.raw(case.label)
            write(
                f"{case.label} = {case.slug} ({case.description}, FP32, {len(case.data) / 1024:.0f} KiB): "
                f"raw ONNX Runtime {raw.p50:.3f} ms per call on one thread"
            )
        write(f"{self.requests} requests per row. Ratios: req/s and p50 against BentoML at the same")
        write("concurrency, and req/s against raw ONNX Runtime's single-thread rate.")
        write("")
        for line in format_table(results):
            write(line)
        write("")
        for line in format_noisy(noisy):
            write(line)
        write("")
        write("Issues 9 and 23, Done when:")
        checks = done_when_checks(
            results, noisy, mlp=MLP, cnn=CNN, mlp_level=cases[0].levels[-1], cnn_level=cases[1].levels[-1]
        )
        for check in checks:
            write(check.line())
        failed = sum(not check.passed for check in checks)
        write(f"checks: {len(checks) - failed} PASS, {failed} FAIL")
        if BENTOML in results.missing:
            write(f"BentoML was not measured: {results.missing[BENTOML]}")

    def print_catalog(self, catalog_size: int | None = None) -> None:
        from marketplace.benchmarks import run_catalog_benchmark

        results = run_catalog_benchmark(catalog_size=catalog_size)
        self.stdout.write(f"catalog: {results.pop('catalog rows')['count']} models")
        self.stdout.write(f"{'query':<32} {'matches':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for label, row in results.items():
            self.stdout.write(
                f"{label:<32} {row['matches']:>8} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                f"{row['max_ms']:>8.1f}"
            )
        self.stdout.write("")
