"""`benchmark --llm`'s parts that can be checked without timing: how a stream is read and counted, and the
table and checks it prints (the figures themselves are measurements, never asserted)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference.benchmarking.llm import Endpoint, LlmResult, format_llm_table, llm_checks, stream_once


def result(ttft_ms: float, decode: float, aggregate: float, errors: int = 0) -> LlmResult:
    return LlmResult(ttft_ms, decode, aggregate, 128, [f"503: busy {i}" for i in range(errors)])


def lines_of(llama: LlmResult, modelport: LlmResult) -> list[str]:
    return [check.line() for check in llm_checks(llama, modelport)]


def test_the_table_gives_modelports_ratios_to_llama_cpps_own_server():
    lines = format_llm_table(result(20.0, 100.0, 200.0), result(30.0, 95.0, 184.0, errors=1))
    llama, modelport, ratios = lines[2:]
    assert llama.split()[-5:] == ["20.0", "100.0", "200.0", "128", "0"]
    assert modelport.split()[-5:] == ["30.0", "95.0", "184.0", "128", "1"]
    assert ratios.split() == ["ratio", "1.50×", "0.95×", "0.92×"]


def test_the_checks_pass_at_their_bounds_and_fail_past_them():
    llama = result(20.0, 100.0, 200.0)
    assert all(line.startswith("PASS") for line in lines_of(llama, result(70.0, 90.0, 180.0)))
    # Just short of 0.9× reads as such, not rounded up to look like it passed.
    missed = lines_of(llama, result(70.5, 90.0, 179.0))
    assert [line.split()[0] for line in missed] == ["FAIL", "FAIL", "PASS"]
    assert "179.0 vs 200.0 tokens/s = 0.895×" in missed[0] and "(+50.5 ms)" in missed[1]


def test_a_figure_that_could_not_be_measured_fails():
    nothing = result(float("nan"), float("nan"), float("nan"))
    assert [line[:4] for line in lines_of(result(20.0, 100.0, 200.0), nothing)] == ["FAIL", "FAIL", "PASS"]
    assert "—" in format_llm_table(result(20.0, 100.0, 200.0), nothing)[-1]


@pytest.mark.parametrize("side", ["llama.cpp", "Modelport"])
def test_failed_streams_on_either_side_fail_the_checks(side):
    # Failures on llama.cpp's side would flatter Modelport's ratio: its figures pass, the run does not.
    llama = result(20.0, 100.0, 150.0, errors=2 if side == "llama.cpp" else 0)
    modelport = result(30.0, 100.0, 200.0, errors=2 if side == "Modelport" else 0)
    lines = lines_of(llama, modelport)
    assert lines[-1].startswith("FAIL  every stream answered in full")
    assert f"2 of {side}'s" in lines[-1]


class CannedStream(BaseHTTPRequestHandler):
    """A server that answers every POST with the events of `self.server.events`."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in self.server.events:
            self.wfile.write(b"data: " + event.encode() + b"\n\n")
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def call(events: list[str]):
        server.events = events
        return stream_once(Endpoint.of(f"http://127.0.0.1:{server.server_port}/v1/chat/completions"), {})

    yield call
    server.shutdown()
    server.server_close()


def delta(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


def test_a_stream_counts_its_content_pieces_and_ends_at_done(canned):
    role = json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    end = json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    stream = canned([role, delta("Once"), delta(" upon"), delta(" a"), end, "[DONE]"])
    assert (stream.tokens, stream.error) == (3, "")
    assert 0 < stream.first_token_s <= stream.last_token_s


def test_a_stream_that_reports_an_error_or_ends_early_has_failed(canned):
    error = json.dumps({"error": {"message": "the model's host stopped", "type": "server_error"}})
    stopped = canned([delta("Once"), error, "[DONE]"])
    assert stopped.error == "error in the stream: the model's host stopped"
    cut = canned([delta("Once"), delta(" upon")])
    assert cut.error == "the stream ended without data: [DONE] after 2 tokens"
