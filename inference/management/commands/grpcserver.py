"""`python manage.py grpcserver`: serve the Open Inference Protocol over gRPC on GRPC_PORT until stopped."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.protocols.grpc_service import server_create
from portal.metrics import metrics_dir_prune


class Command(BaseCommand):
    help = "Serve KServe's inference.GRPCInferenceService (tritonclient.grpc works unchanged) on GRPC_PORT."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
        parser.add_argument(
            "--port", type=int, default=settings.GRPC_PORT, help="default: $GRPC_PORT or 8001"
        )
        parser.add_argument("--threads", type=int, default=settings.GRPC_THREADS)

    def handle(self, *args, host: str, port: int, threads: int, **options):
        metrics_dir_prune()
        server, bound = server_create(address=f"{host}:{port}", threads=threads)
        if not bound:
            raise SystemExit(f"could not listen on {host}:{port}")
        server.start()
        self.stdout.write(f"gRPC inference server listening on {host}:{bound}", ending="\n")
        self.stdout.flush()
        stopped = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopped.set())
        stopped.wait()
        # Calls in flight get a few seconds to finish; new ones are refused at once.
        server.stop(grace=5).wait()
