"""`python manage.py dataplane`: serve every path, predictions on the fast path (inference.dataplane)."""

import os

import uvicorn
from django.core.management.base import BaseCommand

from portal.metrics import metrics_dir_prune


class Command(BaseCommand):
    help = (
        "Serve the site and the prediction data plane with uvicorn: /v2/…/infer and /api/v1/…/predict from "
        "programs take the fast path, every other path is the site's (the same as gunicorn portal.wsgi)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("WEB_CONCURRENCY", "2")),
            help="processes (default: $WEB_CONCURRENCY or 2)",
        )

    def handle(self, *args, host: str, port: int, workers: int, **options):
        metrics_dir_prune()
        uvicorn.run(
            "inference.dataplane.asgi:application",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            # The client's address is REMOTE_ADDR as gunicorn gives it; proxies are counted by
            # TRUSTED_PROXY_COUNT (portal.throttles), not trusted by uvicorn on its own.
            proxy_headers=False,
            server_header=False,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
