"""The peer: a BentoML service with adaptive batching on the same ONNX file, run by `bentoml serve`.

BentoML comes from the optional `bench` extra (`pip install '.[bench]'`). The service is written into a
temporary directory next to a copy of the model file, served on a free loopback port, and stopped at the end.
Nothing is downloaded: BentoML's home is in the temporary directory and its usage tracking is off.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "pip install '.[bench]'  (from the Modelport checkout; BentoML is pinned in the 'bench' extra)"
SERVICE_CLASS = "OnnxClassifier"
API_ROUTE = "/predict"
API_INPUT = "x"

# What a BentoML user writes for an ONNX model: one worker, adaptive batching along the first dimension.
SERVICE_SOURCE = '''\
"""Written by `python manage.py benchmark`: ONNX Runtime behind BentoML's adaptive batching."""

from pathlib import Path

import bentoml
import numpy as np

MODEL_PATH = Path(__file__).with_name("model.onnx")


@bentoml.service(workers=1, traffic={"timeout": 60})
class OnnxClassifier:
    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One compute thread, as the raw baseline: on a small machine ONNX Runtime's spinning thread pool
        # would otherwise starve the server's own event loop, which made this peer slower, not faster.
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(MODEL_PATH), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.astype(np.float32, copy=False)})[0]
'''


class BentoUnavailable(Exception):
    """BentoML is not installed, or its server did not come up; the message says which and what to do."""


def bentoml_installed() -> bool:
    return importlib.util.find_spec("bentoml") is not None


def write_service(directory: Path, model: bytes) -> Path:
    """Writes the service and its model (the bytes Modelport serves) into `directory`; returns the service."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model)
    service = directory / "service.py"
    service.write_text(SERVICE_SOURCE)
    return service


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def json_body(sample) -> bytes:
    import json

    return json.dumps({API_INPUT: sample.tolist()}).encode()


class BentoServer:
    """`with BentoServer(model) as server:` serves `model` at http://127.0.0.1:`server.port``API_ROUTE`."""

    def __init__(self, model: bytes, *, startup_timeout: float = 120.0):
        self.model = model
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.directory: Path | None = None

    def __enter__(self) -> BentoServer:
        if not bentoml_installed():
            raise BentoUnavailable(
                f"BentoML is not installed in this environment. Install it with: {INSTALL_HINT}"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="modelport-bench-bento-"))
        write_service(self.directory / "service", self.model)
        self.port = free_port()
        environment = {
            **os.environ,
            "BENTOML_HOME": str(self.directory / "home"),
            "BENTOML_DO_NOT_TRACK": "True",
            # BentoML's own server must not inherit the Django project's settings or secrets.
            "PYTHONPATH": "",
        }
        environment.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(self.directory / "bentoml.log", "wb")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                f"service:{SERVICE_CLASS}",
                "--working-dir",
                str(self.directory / "service"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=self.directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers share the group, so stopping it stops them all
        )
        try:
            self.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BentoUnavailable(
                    f"`bentoml serve` exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/readyz")
                ready = connection.getresponse().status == 200
                connection.close()
            except OSError:
                ready = False
            if ready:
                return
            time.sleep(0.25)
        raise BentoUnavailable(
            f"`bentoml serve` was not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        text = (self.directory / "bentoml.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self.log.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
