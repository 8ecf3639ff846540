"""WSGI applications served from the event loop: the request body read as the application asks for it,
the answer sent as it comes, and a client that goes away stops a streamed answer (its iterable is closed, as
a WSGI server's failed write would), so a token stream frees its slot at once.

A whole answer is sent from the event loop in one message; only streamed answers cross back from the thread
chunk by chunk.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import threading
from concurrent.futures import Executor

logger = logging.getLogger(__name__)

# How long a thread waits for the event loop to send a streamed answer's last chunks before giving up.
SEND_TIMEOUT_SECONDS = 60
# How many chunks of a streamed answer may wait to be sent before the application is held back.
STREAM_WINDOW = 32


class ClientGone(Exception):
    pass


class RequestBody(io.RawIOBase):
    """`wsgi.input`: reads ASGI body messages on demand, from the application's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive, on_complete=None):
        self.loop = loop
        self.receive = receive
        self.buffer = bytearray()
        self.complete = False
        self.disconnected = False
        self.on_complete = on_complete  # called (from the thread) once the last body message is read

    def readable(self) -> bool:
        return True

    def _more(self) -> None:
        message = asyncio.run_coroutine_threadsafe(self.receive(), self.loop).result()
        if message["type"] == "http.disconnect":
            self.complete = self.disconnected = True
            raise ClientGone()
        self.buffer += message.get("body", b"")
        self.complete = not message.get("more_body", False)
        if self.complete and self.on_complete is not None:
            self.on_complete()

    def read(self, size: int = -1) -> bytes:
        while not self.complete and (size < 0 or len(self.buffer) < size):
            self._more()
        if size < 0 or size >= len(self.buffer):
            data, self.buffer = bytes(self.buffer), bytearray()
        else:
            data, self.buffer = bytes(self.buffer[:size]), self.buffer[size:]
        return data

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        while not self.complete and b"\n" not in self.buffer and (size < 0 or len(self.buffer) < size):
            self._more()
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        if size >= 0:
            end = min(end, size)
        data, self.buffer = bytes(self.buffer[:end]), self.buffer[end:]
        return data


class PreReadBody(io.BytesIO):
    """`wsgi.input` of a body read whole before the application runs."""

    complete = True
    disconnected = False


async def read_whole_body(receive, limit: int) -> tuple[bytes, bool]:
    """The body, up to `limit` + 1 bytes (the rest is left unread; the application answers 413 for it), and
    whether the client went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False) or size > limit:
            return b"".join(chunks), False


def wsgi_environ(scope: dict, body) -> dict:
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        # WSGI's PATH_INFO is the decoded path's bytes as latin-1 (PEP 3333); ASGI's is already str.
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        environ[name] = environ[name] + "," + value if name in environ else value
    return environ


class Exchange:
    """One request answered by a WSGI application in a worker thread.

    Once its body is read, the client's going away is watched for: `gone` is set and the actions the
    application gave `environ["modelport.on_hangup"]` run (a call waiting for a model's slot leaves its
    queue at once, instead of when its first token would have been written to nobody)."""

    def __init__(self, app, scope: dict, receive, send, loop: asyncio.AbstractEventLoop):
        self.app, self.scope, self.receive, self.send, self.loop = app, scope, receive, send, loop
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # the response has begun (its start is sent or on its way)
        self.gone = threading.Event()
        self.watching: asyncio.Future | None = None
        self.hangup_actions: list = []
        self.lock = threading.Lock()

    def on_hangup(self, action) -> None:
        """Run `action()` when the client goes away (at once if it has)."""
        with self.lock:
            if not self.gone.is_set():
                self.hangup_actions.append(action)
                return
        action()

    def watch(self) -> None:
        """Start watching for the client's going away (on the event loop; the body must be read)."""
        if self.watching is None:
            self.watching = asyncio.ensure_future(self.watch_disconnect())

    def watch_from_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.watch)

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]

    def run(self, environ: dict) -> bytes | None:
        """In a worker thread: the whole answer's body, or None when it was streamed (sent from here)."""
        result = self.app(environ, self.start_response)
        try:
            if not getattr(result, "streaming", False):
                return b"".join(result)
            self.stream(result, environ["wsgi.input"])
            return None
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def stream(self, result, body) -> None:
        """Send the answer's chunks as the application yields them. The thread does not wait for each send:
        chunks go to a sender task on the event loop, at most STREAM_WINDOW ahead of it (a client that reads
        slowly holds the application back, one that went away stops it)."""
        outbox: asyncio.Queue = asyncio.Queue()
        window = threading.Semaphore(STREAM_WINDOW)
        sending = asyncio.run_coroutine_threadsafe(self.send_all(outbox, window), self.loop)

        def post(message: dict) -> None:
            while not window.acquire(timeout=1):
                if self.gone.is_set() or sending.done():
                    raise ClientGone()
            self.loop.call_soon_threadsafe(outbox.put_nowait, message)

        self.started = True
        try:
            post({"type": "http.response.start", "status": self.status, "headers": self.headers})
            for chunk in result:
                if self.gone.is_set() or body.disconnected:
                    raise ClientGone()
                if chunk:
                    post({"type": "http.response.body", "body": chunk, "more_body": True})
            post({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.loop.call_soon_threadsafe(outbox.put_nowait, None)
        sending.result(SEND_TIMEOUT_SECONDS)

    async def send_all(self, outbox: asyncio.Queue, window: threading.Semaphore) -> None:
        while (message := await outbox.get()) is not None:
            await self.send(message)
            window.release()

    async def watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                with self.lock:
                    self.gone.set()
                    actions, self.hangup_actions = self.hangup_actions, []
                for action in actions:
                    try:
                        action()
                    except Exception:
                        logger.exception("a hang-up action failed")
                return


async def serve(
    app, scope: dict, receive, send, executor: Executor, *, read_whole: int | None = None
) -> None:
    """Answer one HTTP request with the WSGI application `app`, run in `executor`.

    `read_whole`: read the body (up to this many bytes, plus one) before the application starts, so the thread
    never waits on the client; otherwise the application reads it as it goes (uploads)."""
    loop = asyncio.get_running_loop()
    exchange = Exchange(app, scope, receive, send, loop)
    if read_whole is not None:
        data, gone = await read_whole_body(receive, read_whole)
        if gone:
            return
        body = PreReadBody(data)
    else:
        body = RequestBody(loop, receive, on_complete=exchange.watch_from_thread)
    environ = wsgi_environ(scope, body)
    environ["modelport.on_hangup"] = exchange.on_hangup
    if body.complete:
        exchange.watch()
    try:
        content = await loop.run_in_executor(executor, exchange.run, environ)
    except ClientGone:
        return
    except Exception:
        logger.exception("the application failed outside Django's own error handling")
        if exchange.started:
            return
        exchange.status, exchange.headers, content = 500, [(b"content-type", b"text/plain")], b"Server error."
    finally:
        if exchange.watching is not None:
            exchange.watching.cancel()
    if content is None:  # streamed
        return
    headers = exchange.headers
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": exchange.status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})
