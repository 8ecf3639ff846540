"""`python manage.py benchmark --url http://127.0.0.1:8000`: latency and throughput against a running server.

For the demo digits model (or an equivalent MLP it builds) and a ResNet-shaped CNN it builds, it measures raw
ONNX Runtime in this process, then `/api/v1/…/predict` and `/v2/…/infer` at concurrency 1 and 16 (keep-alive
connections), and prints each as a ratio to raw.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from io import StringIO
from urllib.parse import urlsplit

import numpy as np
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from inference.codec import tensor_to_bytes
from marketplace.models import Model, ModelVersion
from portal.models import ApiKey

BENCHMARK_USER = "benchmark"


def digits_mlp() -> bytes:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    layers = [(64, 64), (64, 32), (32, 10)]
    nodes, initializers, current = [], [], "pixels"
    for index, (fan_in, fan_out) in enumerate(layers):
        weight = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers += [
            helper.make_tensor(f"w{index}", TensorProto.FLOAT, weight.shape, weight.ravel()),
            helper.make_tensor(f"b{index}", TensorProto.FLOAT, [fan_out], np.zeros(fan_out, np.float32)),
        ]
        out = "logits" if index == len(layers) - 1 else f"h{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [out]))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"{out}r"]))
            out = f"{out}r"
        current = out
    return _model(nodes, initializers, ("pixels", [-1, 64]), ("logits", [-1, 10]))


def resnet_cnn(blocks: int = 3, width: int = 16) -> bytes:
    """conv3x3 stem, `blocks` residual blocks (conv-relu-conv + skip, relu), global average pool, fc 10."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    nodes, initializers = [], []

    def conv(name: str, source: str, c_in: int, c_out: int) -> str:
        weight = (rng.normal(size=(c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        initializers.append(helper.make_tensor(f"{name}_w", TensorProto.FLOAT, weight.shape, weight.ravel()))
        initializers.append(
            helper.make_tensor(f"{name}_b", TensorProto.FLOAT, [c_out], np.zeros(c_out, np.float32))
        )
        nodes.append(helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [name], pads=[1, 1, 1, 1]))
        return name

    def relu(source: str) -> str:
        nodes.append(helper.make_node("Relu", [source], [f"{source}_r"]))
        return f"{source}_r"

    current = relu(conv("stem", "image", 3, width))
    for block in range(blocks):
        inner = relu(conv(f"b{block}c1", current, width, width))
        second = conv(f"b{block}c2", inner, width, width)
        nodes.append(helper.make_node("Add", [second, current], [f"b{block}sum"]))
        current = relu(f"b{block}sum")
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    weight = (rng.normal(size=(width, 10)) / np.sqrt(width)).astype(np.float32)
    initializers += [
        helper.make_tensor("fc_w", TensorProto.FLOAT, weight.shape, weight.ravel()),
        helper.make_tensor("fc_b", TensorProto.FLOAT, [10], np.zeros(10, np.float32)),
    ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))
    return _model(nodes, initializers, ("image", [-1, 3, 32, 32]), ("logits", [-1, 10]))


def _model(nodes, initializers, input_spec, output_spec) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "benchmark",
        [helper.make_tensor_value_info(input_spec[0], TensorProto.FLOAT, input_spec[1])],
        [helper.make_tensor_value_info(output_spec[0], TensorProto.FLOAT, output_spec[1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class Case:
    slug: str
    data: bytes
    input_name: str
    sample: np.ndarray


@dataclass
class Measurement:
    p50: float
    p99: float
    rate: float
    errors: int = 0


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
        "Measure raw ONNX Runtime vs /api/v1 predict vs /v2 infer (p50, p99, req/s) against a running server."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--seconds", type=float, default=5.0, help="duration of each HTTP measurement")
        parser.add_argument("--concurrency", default="1,16")
        parser.add_argument(
            "--catalog",
            action="store_true",
            help="also time catalog list and search (seed first: seed_catalog --count 100000)",
        )
        parser.add_argument(
            "--catalog-size", type=int, help="with --catalog: first add synthetic models up to this many"
        )

    def handle(self, *args, url: str, seconds: float, concurrency: str, catalog: bool, **options):
        if catalog:
            self.print_catalog(options["catalog_size"])
        levels = [int(level) for level in concurrency.split(",")]
        user, key = self.benchmark_user()
        cases = [self.digits_case(user, url, key), self.cnn_case(user, url, key)]
        progress = Progress(len(cases) * (1 + 2 * len(levels)), sys.stderr)
        rows = []
        for case in cases:
            raw = self.measure_raw(case, seconds)
            progress.step(f"{case.slug}: raw ONNX Runtime")
            rows.append((case.slug, "raw onnxruntime", 1, raw, raw))
            for path in ("api/v1", "v2"):
                for level in levels:
                    result = self.measure_http(url, key, case, path, level, seconds)
                    progress.step(f"{case.slug}: {path} x{level}")
                    rows.append((case.slug, path, level, result, raw))
        self.print_table(rows)

    # --- setup ---------------------------------------------------------------------------------------------

    def benchmark_user(self):
        user, _ = get_user_model().objects.get_or_create(
            username=BENCHMARK_USER, defaults={"email": "benchmark@example.com"}
        )
        _, key = ApiKey.issue(user=user, name="benchmark", scopes=["read", "predict", "upload"])
        call_command(
            "quota",
            BENCHMARK_USER,
            "--requests-per-minute",
            "100000000",
            "--requests-per-day",
            "1000000000",
            "--compute-seconds-per-month",
            "1000000000",
            stdout=StringIO(),
        )
        return user, key

    def digits_case(self, user, url: str, key: str) -> Case:
        demo = (
            ModelVersion.objects.filter(
                model__owner__username="demo", model__name="digits", status=ModelVersion.Status.READY
            )
            .order_by("-number")
            .first()
        )
        if demo is not None:
            with default_storage.open(demo.file.name) as handle:
                data = handle.read()
            name = demo.signature["inputs"][0]["name"]
            shape = [1 if d < 0 else d for d in demo.signature["inputs"][0]["shape"]]
            self.stdout.write("digits: the seeded demo/digits model")
            return Case(
                "demo/digits", data, name, np.random.default_rng(0).random(shape, dtype=np.float32) * 16
            )
        data = digits_mlp()
        self.publish(user, url, key, "digits", data)
        return Case(
            f"{BENCHMARK_USER}/digits",
            data,
            "pixels",
            np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16,
        )

    def cnn_case(self, user, url: str, key: str) -> Case:
        data = resnet_cnn()
        self.publish(user, url, key, "resnet-cnn", data)
        return Case(
            f"{BENCHMARK_USER}/resnet-cnn",
            data,
            "image",
            np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32),
        )

    def publish(self, user, url: str, key: str, name: str, data: bytes) -> None:
        Model.objects.filter(owner=user, name=name).delete()
        status, body = self.upload(url, key, name, data)
        if status not in (201, 202):
            raise CommandError(f"POST /api/v1/models for {name} answered {status}: {body[:300]}")
        self.stdout.write(f"{name}: uploaded through POST /api/v1/models")
        self.wait_ready(user, name)

    def upload(self, url: str, key: str, name: str, data: bytes) -> tuple[int, str]:
        import requests

        try:
            response = requests.post(
                f"{url}/api/v1/models",
                headers={"Authorization": f"Bearer {key}"},
                data={
                    "name": name,
                    "task": "image-classification",
                    "labels": ",".join(str(i) for i in range(10)),
                },
                files={"file": (f"{name}.onnx", data)},
                timeout=120,
            )
        except requests.RequestException as exc:
            raise CommandError(f"the server at {url} does not answer: {exc}") from exc
        return response.status_code, response.text

    def wait_ready(self, user, name: str) -> None:
        deadline = time.monotonic() + 120
        while not ModelVersion.objects.filter(
            model__owner=user, model__name=name, status=ModelVersion.Status.READY
        ).exists():
            if time.monotonic() > deadline:
                raise CommandError(f"{name} did not become ready")
            time.sleep(0.5)

    # --- measuring -----------------------------------------------------------------------------------------

    def measure_raw(self, case: Case, seconds: float) -> Measurement:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = onnxruntime.InferenceSession(case.data, options, providers=["CPUExecutionProvider"])
        feed = {case.input_name: case.sample}
        for _ in range(50):
            session.run(None, feed)
        latencies = []
        deadline = time.perf_counter() + min(seconds, 3)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feed)
            latencies.append(time.perf_counter() - started)
        return summarize(latencies, sum(latencies))

    def measure_http(
        self, url: str, key: str, case: Case, path: str, level: int, seconds: float
    ) -> Measurement:
        parts = urlsplit(url)
        if path == "api/v1":
            target = f"/api/v1/models/{case.slug}/predict"
            body = json.dumps({"inputs": {case.input_name: case.sample.tolist()}}).encode()
            headers = {"Content-Type": "application/json"}
        else:
            target = f"/v2/models/{case.slug}/infer"
            data = tensor_to_bytes(case.sample)
            header = json.dumps(
                {
                    "inputs": [
                        {
                            "name": case.input_name,
                            "datatype": "FP32",
                            "shape": list(case.sample.shape),
                            "parameters": {"binary_data_size": len(data)},
                        }
                    ],
                    "parameters": {"binary_data_output": True},
                }
            ).encode()
            body = header + data
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            }
        headers["Authorization"] = f"Bearer {key}"
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        start_at = time.perf_counter() + 1.0  # every thread warms up, then all measure the same window
        stop_at = start_at + seconds

        def client():
            connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
            mine = []
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    break
                try:
                    connection.request("POST", target, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
                    ok = False
                finished = time.perf_counter()
                if started >= start_at:
                    if ok:
                        mine.append(finished - started)
                    else:
                        with lock:
                            errors[0] += 1
            connection.close()
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(level)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result = summarize(latencies, seconds)
        result.errors = errors[0]
        return result

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

    def print_table(self, rows) -> None:
        self.stdout.write("")
        self.stdout.write(
            f"{'model':<22} {'path':<16} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
            f"{'p50/raw':>8} {'req/s /raw':>10} {'errors':>6}"
        )
        for slug, path, level, result, raw in rows:
            self.stdout.write(
                f"{slug:<22} {path:<16} {level:>4} {result.p50:>8.3f} {result.p99:>8.3f} {result.rate:>8.0f} "
                f"{result.p50 / raw.p50:>8.1f} {result.rate / raw.rate:>10.3f} {result.errors:>6}"
            )


def summarize(latencies: list[float], elapsed: float) -> Measurement:
    if not latencies:
        return Measurement(p50=float("nan"), p99=float("nan"), rate=0.0)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Measurement(p50=statistics.median(ordered) * 1000, p99=p99 * 1000, rate=len(ordered) / elapsed)
