"""`benchmark --llm`: a GGUF chat model in llama.cpp's own server and in Modelport, with one streaming client.

llama.cpp's server is the HTTP server embedded in the same `xllamacpp` wheel Modelport's hosts use, run in a
process of its own on the same file, with the same threads, parallel slots and context per slot as a Modelport
host (`inference.llm.hosts.spec_for`). Both are called through their OpenAI-compatible
`/v1/chat/completions` with `stream: true`, the same messages, `temperature` 0 and a seed, by one client
(`http.client`, Server-Sent Events read line by line):
- time to first token: from sending the request to the first piece of content, one stream at a time;
- decode tokens/s of one stream: the tokens after the first over the time after the first;
- aggregate tokens/s of 4 concurrent streams: every stream's tokens over the wall time of all four, summed
  over three rounds.
Tokens are counted as the content chunks that arrive (both servers send one per token).
A stream has failed when it is not answered 200, reports an error or ends without `data: [DONE]`; a failed
stream on either side fails the checks.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LLAMA = "llama.cpp server"
MODELPORT = "Modelport /v1"
PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a storm."}]
STREAMS = 4


@dataclass
class Stream:
    first_token_s: float = float("nan")  # from the request to the first content
    tokens: int = 0
    last_token_s: float = float("nan")
    error: str = ""

    @property
    def decode_rate(self) -> float:
        spent = self.last_token_s - self.first_token_s
        return (self.tokens - 1) / spent if self.tokens > 1 and spent > 0 else float("nan")


@dataclass
class LlmResult:
    ttft_ms: float  # p50 over the single streams
    decode_rate: float  # tokens/s of one stream, median
    aggregate_rate: float  # tokens/s of STREAMS concurrent streams
    tokens_per_stream: float
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    headers: dict

    @classmethod
    def of(cls, url: str, headers: dict | None = None) -> Endpoint:
        parts = urlsplit(url)
        return cls(parts.hostname, parts.port or 80, parts.path or "/", headers or {})


def stream_once(endpoint: Endpoint, body: dict, timeout: float = 300) -> Stream:
    """One streamed chat completion, timed from the moment the request is sent."""
    result = Stream()
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        payload = json.dumps({**body, "stream": True}).encode()
        headers = {"Content-Type": "application/json", **endpoint.headers}
        started = time.perf_counter()
        connection.request("POST", endpoint.path, payload, headers)
        response = connection.getresponse()
        if response.status != 200:
            result.error = f"{response.status}: {response.read()[:200]!r}"
            return result
        ended = False
        while True:
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if line == b"data: [DONE]":
                ended = True
                break
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event.get("error"):
                # A server that gives up mid-answer says so in the stream, after its 200.
                result.error = f"error in the stream: {(event['error'] or {}).get('message', event['error'])}"
                return result
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter() - started
                    if result.tokens == 0:
                        result.first_token_s = now
                    result.tokens += 1
                    result.last_token_s = now
        if not ended:
            result.error = f"the stream ended without data: [DONE] after {result.tokens} tokens"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return result


def measure(endpoint: Endpoint, body: dict, *, singles: int = 5, rounds: int = 3) -> LlmResult:
    stream_once(endpoint, {**body, "max_tokens": 8})  # warm: the model loaded, the prompt cached alike
    alone = [stream_once(endpoint, body) for _ in range(singles)]
    together: list[Stream] = []
    lock = threading.Lock()

    def one() -> None:
        stream = stream_once(endpoint, body)
        with lock:
            together.append(stream)

    wall = 0.0
    for _ in range(rounds):
        threads = [threading.Thread(target=one) for _ in range(STREAMS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall += time.perf_counter() - started
    good = [s for s in alone if not s.error and s.tokens]
    errors = [s.error for s in alone + together if s.error]
    return LlmResult(
        ttft_ms=statistics.median(s.first_token_s for s in good) * 1000 if good else float("nan"),
        decode_rate=statistics.median(s.decode_rate for s in good) if good else float("nan"),
        aggregate_rate=sum(s.tokens for s in together) / wall if wall > 0 else float("nan"),
        tokens_per_stream=statistics.mean(s.tokens for s in good) if good else float("nan"),
        errors=errors,
    )


def chat_body(model: str, max_tokens: int) -> dict:
    return {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": 7}


# --- llama.cpp's own server ---------------------------------------------------------------------------------

SERVER_SCRIPT = """
import sys, threading, xllamacpp
model, port, context, slots, threads = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
params = xllamacpp.CommonParams()
params.model.path = model
params.n_ctx = context * slots
params.n_parallel = slots
params.cpuparams.n_threads = threads
params.cpuparams_batch.n_threads = threads
params.hostnames = ["127.0.0.1"]
params.port = port
server = xllamacpp.Server(params)
print("ready", flush=True)
threading.Event().wait()
"""


@contextmanager
def llama_server(*, model: str, context: int, slots: int, threads: int):
    """llama.cpp's HTTP server on `model` in a process of its own; yields its base URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [str(v) for v in (model, port, context, slots, threads)]
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"llama.cpp's server did not start (exit {process.poll()})")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the report ---------------------------------------------------------------------------------------------


@dataclass
class Check:
    text: str
    passed: bool

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.text}"


def llm_checks(llama: LlmResult, modelport: LlmResult) -> list[Check]:
    ratio = modelport.aggregate_rate / llama.aggregate_rate if llama.aggregate_rate else float("nan")
    extra = modelport.ttft_ms - llama.ttft_ms
    return [
        Check(
            f"{STREAMS}-stream aggregate ≥ 0.9× llama.cpp's: {modelport.aggregate_rate:.1f} vs "
            f"{llama.aggregate_rate:.1f} tokens/s = {ratio:.3g}×",
            ratio >= 0.9,
        ),
        Check(
            f"time to first token ≤ llama.cpp's + 50 ms: {modelport.ttft_ms:.1f} vs {llama.ttft_ms:.1f} ms "
            f"(+{extra:.1f} ms)",
            extra <= 50,
        ),
        # A server whose streams failed is not measured, whichever side it is: llama.cpp's failures would
        # flatter Modelport's ratios, Modelport's would hide behind a fast remainder.
        Check(
            f"every stream answered in full: {len(llama.errors)} of llama.cpp's and "
            f"{len(modelport.errors)} of Modelport's failed",
            not llama.errors and not modelport.errors,
        ),
    ]


def format_llm_table(llama: LlmResult, modelport: LlmResult) -> list[str]:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}×" if b and b == b and a == a else "—"

    lines = [
        f"{'server':<18} {'TTFT p50 ms':>12} {'decode tok/s':>13} {f'{STREAMS} streams tok/s':>17} "
        f"{'tokens/stream':>14} {'errors':>7}",
        "-" * 86,
    ]
    for name, result in ((LLAMA, llama), (MODELPORT, modelport)):
        lines.append(
            f"{name:<18} {result.ttft_ms:>12.1f} {result.decode_rate:>13.1f} {result.aggregate_rate:>17.1f} "
            f"{result.tokens_per_stream:>14.0f} {len(result.errors):>7}"
        )
    lines.append(
        f"{'ratio':<18} {ratio(modelport.ttft_ms, llama.ttft_ms):>12} "
        f"{ratio(modelport.decode_rate, llama.decode_rate):>13} "
        f"{ratio(modelport.aggregate_rate, llama.aggregate_rate):>17}"
    )
    return lines
