"""The data plane's ASGI application (`python manage.py dataplane` serves it with uvicorn).

Django is set up at start-up, in a thread (the start-up checks query the database, which Django refuses to do
from the event loop); a server that must not start (`portal.startup.refuse_to_start`) stops uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

logger = logging.getLogger(__name__)


class DataPlane:
    def __init__(self):
        self.site = None  # portal.wsgi.application, once Django is set up
        self.endpoints = {}  # a prediction route's name -> its endpoint (oip.py, rest.py)
        self.route_of = None  # handlers.program_prediction_route
        self.answers_here = None  # endpoints.answers_here
        self.body_limit = 0
        # Two pools: prediction threads mostly wait on runners and rarely touch the database; the site's
        # keep a database connection each, so they are as many as one gunicorn worker's threads.
        self.prediction_threads: ThreadPoolExecutor | None = None
        self.site_threads: ThreadPoolExecutor | None = None
        # The OpenAI-compatible API's calls: token streams and calls waiting for a slot last as long as the
        # model generates, so they have threads of their own, and neither starve the site's pages nor wait
        # behind them (a full queue is then refused with a 503 instead of waiting for a thread).
        self.stream_threads: ThreadPoolExecutor | None = None

    def setup(self) -> None:
        from django.conf import settings

        import portal.wsgi  # sets Django up and refuses to start when it must (encryption keys)

        from .endpoints import answers_here
        from .handlers import program_prediction_route
        from .oip import InferEndpoint
        from .rest import PredictEndpoint

        self.site = portal.wsgi.application
        self.route_of = program_prediction_route
        self.answers_here = answers_here
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # None: no limit (Django's meaning)
        self.body_limit = sys.maxsize if limit is None else limit
        self.prediction_threads = ThreadPoolExecutor(
            settings.DATA_PLANE_PREDICTION_THREADS, thread_name_prefix="predict"
        )
        infer = InferEndpoint(self.prediction_threads, self.body_limit)
        predict = PredictEndpoint(self.prediction_threads, self.body_limit)
        self.endpoints = {"v2-model-infer": infer, "v2-version-infer": infer, "model-predict": predict}
        self.site_threads = ThreadPoolExecutor(settings.DATA_PLANE_SITE_THREADS, thread_name_prefix="site")
        self.stream_threads = ThreadPoolExecutor(
            settings.DATA_PLANE_STREAM_THREADS, thread_name_prefix="stream"
        )

    def shutdown(self) -> None:
        from portal.metrics import process_exited

        for pool in (self.prediction_threads, self.site_threads, self.stream_threads):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        process_exited(os.getpid())

    async def __call__(self, scope, receive, send) -> None:
        from .bridge import serve

        kind = scope["type"]
        if kind == "http":
            route = self.route_of(scope["method"], scope["path"], scope["headers"])
            headers = dict(scope["headers"]) if route is not None else {}
            if route is not None and self.answers_here(scope, headers):
                await self.endpoints[route.url_name](scope, receive, send, route, headers)
                return
            threads = self.stream_threads if scope["path"].startswith("/v1/") else self.site_threads
            await serve(self.site, scope, receive, send, threads)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def lifespan(self, receive, send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await loop.run_in_executor(None, self.setup)
                except BaseException as exc:  # noqa: BLE001 - SystemExit from refuse_to_start included
                    logger.error("the data plane cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await loop.run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = DataPlane()
