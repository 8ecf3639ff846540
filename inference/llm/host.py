"""One GGUF model in llama.cpp's server engine (`xllamacpp.Server`), run confined (`hosts.py` starts it).

    python -m inference.llm.host --model PATH --listen-fd N --ready-fd N --workdir DIR --context N --slots N
        --threads N --keep-alive S --queue-max N

The model file is bind-mounted read-only; `--workdir` is its only writable folder. The engine's own HTTP
listener is bound to a Unix socket in that folder, unreachable from outside the sandbox (its network
namespace is empty and seccomp refuses every other socket family): requests arrive on the listening socket
inherited as `--listen-fd`, one thread per connection (the engine batches the connections' sequences in its
slots). A client that goes away stops its sequence: the next piece cannot be written, and the stream
callback answers "stop". Calls take the slots in fair turns between users (`fairness.py`); past `--queue-max`
waiting, a call is refused as busy. Idle (no connection) for `--keep-alive` seconds, the host exits.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import threading
import time

from inference.llm.fairness import Busy, FairGate
from inference.llm.protocol import LineReader, line_encode


def hung_up(connection: socket.socket) -> bool:
    """The caller closed its end (nothing more is expected from it while its call waits)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Host:
    def __init__(self, server, *, context: int, keep_alive: float, gate: FairGate):
        self.server = server
        self.gate = gate
        self.context = context
        self.keep_alive = keep_alive
        self.lock = threading.Lock()
        self.connections = 0
        self.idle_since = time.monotonic()

    def serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self.exit_when_idle, daemon=True).start()
        while True:
            connection, _ = listener.accept()
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.converse, args=(connection,), daemon=True).start()

    def exit_when_idle(self) -> None:
        while True:
            time.sleep(min(5.0, self.keep_alive))
            with self.lock:
                if self.connections == 0 and time.monotonic() - self.idle_since >= self.keep_alive:
                    # The listener goes with the process: a client connecting now is refused and starts a
                    # new host.
                    os._exit(0)

    def converse(self, connection: socket.socket) -> None:
        """One call: its first request takes a slot in turn (`fairness.FairGate`), held until it ends."""
        reader = LineReader(connection)
        user, holding = "", False
        try:
            while True:
                try:
                    request = reader.read()
                except ConnectionError:
                    return
                if not holding:
                    user = str(request.get("user", ""))
                    try:
                        holding = self.gate.enter(user, lambda: hung_up(connection))
                    except Busy as busy:
                        connection.sendall(line_encode({"error": {"kind": "busy", "message": str(busy)}}))
                        return
                    if not holding:
                        return
                handle = (
                    self.server.handle_chat_completions
                    if request.get("kind") == "chat"
                    else self.server.handle_completions
                )
                body = dict(request.get("body") or {})
                if request.get("op") == "count":
                    self.count(connection, handle, body)
                else:
                    self.generate(connection, handle, body, chat=request.get("kind") == "chat")
        finally:
            if holding:
                self.gate.leave(user)
            connection.close()
            with self.lock:
                self.connections -= 1
                self.idle_since = time.monotonic()

    def count(self, connection: socket.socket, handle, body: dict) -> None:
        # One token generated: the prompt is tokenized and evaluated, and its KV cache is kept in the slot
        # (prompt caching), so the generation that follows starts where this left off.
        body.update(max_tokens=1, stream=False)
        try:
            answer = handle(body)
        except ValueError as exc:
            connection.sendall(line_encode({"error": {"kind": "request", "message": str(exc)}}))
            return
        if "error" in answer:
            connection.sendall(line_encode({"error": error_of(answer["error"])}))
            return
        connection.sendall(line_encode({"prompt_tokens": answer["usage"]["prompt_tokens"]}))

    def generate(self, connection: socket.socket, handle, body: dict, *, chat: bool) -> None:
        body.update(stream=True, timings_per_token=True, stream_options={"include_usage": True})
        state = {"finish_reason": None, "usage": None, "n": 0, "gone": False, "error": None}

        def piece(chunk: dict) -> bool:
            if "error" in chunk:
                state["error"] = error_of(chunk["error"])
                return True
            timings = chunk.get("timings") or {}
            state["n"] = timings.get("predicted_n", state["n"])
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if choice.get("finish_reason"):
                    state["finish_reason"] = choice["finish_reason"]
                if text:
                    try:
                        connection.sendall(line_encode({"text": text, "n": state["n"]}))
                    except OSError:
                        state["gone"] = True
                        return True  # the caller went away: stop this sequence, free its slot
            return False

        try:
            handle(body, piece)
        except ValueError as exc:
            state["error"] = {"kind": "request", "message": str(exc)}
        if state["gone"]:
            return
        if state["error"]:
            message = {"error": state["error"]}
        else:
            usage = state["usage"] or {}
            message = {
                "end": {
                    "finish_reason": state["finish_reason"] or "stop",
                    "prompt_tokens": usage.get("prompt_tokens", 0),
                    "completion_tokens": usage.get("completion_tokens", state["n"]),
                }
            }
        try:
            connection.sendall(line_encode(message))
        except OSError:
            pass


def error_of(error) -> dict:
    if not isinstance(error, dict):
        return {"kind": "internal", "message": str(error)}
    kind = "context" if error.get("type") == "exceed_context_size_error" else "request"
    if error.get("code", 400) >= 500:
        kind = "internal"
    return {"kind": kind, "message": str(error.get("message", ""))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--context", type=int, required=True, help="tokens per slot")
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--keep-alive", type=float, required=True)
    parser.add_argument("--queue-max", type=int, required=True, help="calls that may wait for a slot")
    args = parser.parse_args()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.context * args.slots  # split evenly between the slots
    params.n_parallel = args.slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [os.path.join(args.workdir, "engine.sock")]
    params.endpoint_metrics = False
    params.endpoint_slots = False
    server = xllamacpp.Server(params)
    with os.fdopen(args.ready_fd, "wb") as ready:
        ready.write(line_encode({"ready": True, "context": args.context}))
    listener = socket.socket(fileno=args.listen_fd)
    gate = FairGate(slots=args.slots, queue_max=args.queue_max)
    Host(server, context=args.context, keep_alive=args.keep_alive, gate=gate).serve(listener)


if __name__ == "__main__":
    main()
