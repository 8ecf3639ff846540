"""The noisy tenant: callers that each keep one long prediction of a slow model running, until told to stop.

Each caller posts an interactive predict and waits for it; if the server answers `202` (still running), the
caller follows the prediction's URL until it ends, so it never has more than one call in flight and the
server's queue does not fill up behind the benchmark. On stop, a call still running is canceled.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from inference.benchmarking.load import Target

TERMINAL = {"succeeded", "failed", "canceled"}


class NoisyTenant:
    def __init__(self, target: Target, *, callers: int, call_seconds: float):
        self.target = target
        self.callers = callers
        self.call_seconds = call_seconds
        self.timeout = call_seconds * 3 + 60
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.durations: list[float] = []  # seconds from POST to the call's end, for calls that succeeded
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.caller, daemon=True) for _ in range(callers)]

    def __enter__(self) -> NoisyTenant:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout)

    def caller(self) -> None:
        connection = self.target.connect(self.timeout)
        while not self.stop_event.is_set():
            began = time.perf_counter()
            try:
                status, error = self.call(connection)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                connection.close()
                connection = self.target.connect(self.timeout)
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            with self.lock:
                if status == "succeeded":
                    self.durations.append(time.perf_counter() - began)
                elif error:
                    self.errors.append(error)
            if status != "succeeded":
                # A refusal must not turn into a busy loop; a call whose fate is unknown may still be running.
                self.stop_event.wait(self.call_seconds)
        connection.close()

    def call(self, connection: http.client.HTTPConnection) -> tuple[str, str]:
        response, content = self.send(connection, "POST", self.target.path, self.target.body)
        if response.status == 200:
            return "succeeded", ""
        if response.status != 202:
            return "failed", f"{response.status}: {content[:200].decode(errors='replace')}"
        path = urlsplit(json.loads(content)["url"]).path
        # An interactive call's record may be written only when it ends: a 404 is final only after the call
        # should have ended (until then it counts as still running, so no second call piles up behind it).
        missing_until = time.monotonic() + self.timeout
        while True:
            if self.stop_event.wait(0.5):
                self.send(connection, "POST", f"{path}/cancel", b"")
                return "canceled", ""
            response, content = self.send(connection, "GET", path, None)
            if response.status == 404 and time.monotonic() < missing_until:
                continue
            if response.status != 200:
                return "failed", f"GET {path}: {response.status}: {content[:200].decode(errors='replace')}"
            record = json.loads(content)
            if record["status"] in TERMINAL:
                return record["status"], "" if record["status"] == "succeeded" else str(record.get("error"))

    def send(self, connection, method: str, path: str, body: bytes | None):
        connection.request(method, path, body=body, headers=self.target.headers)
        response = connection.getresponse()
        return response, response.read()
