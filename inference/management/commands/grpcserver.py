"""`python manage.py grpcserver`: serve the Open Inference Protocol over gRPC on GRPC_PORT until stopped."""

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.protocols.grpc_service import server_start
from portal.metrics import metrics_dir_prune


class Command(BaseCommand):
    help = "Serve KServe's inference.GRPCInferenceService (tritonclient.grpc works unchanged) on GRPC_PORT."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
        parser.add_argument(
            "--port", type=int, default=settings.GRPC_PORT, help="default: $GRPC_PORT or 8001"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=settings.GRPC_THREADS,
            help="threads for the steps that may touch the database (the waits for answers hold none)",
        )

    def handle(self, *args, host: str, port: int, threads: int, **options):
        metrics_dir_prune()
        asyncio.run(self.serve(f"{host}:{port}", threads))

    async def serve(self, address: str, threads: int) -> None:
        try:
            server, bound = await server_start(address=address, threads=threads)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address …"
            raise SystemExit(f"could not listen on {address}: {exc}") from None
        if not bound:
            raise SystemExit(f"could not listen on {address}")
        host = address.rpartition(":")[0]
        self.stdout.write(f"gRPC inference server listening on {host}:{bound}", ending="\n")
        self.stdout.flush()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        # Calls in flight get a few seconds to finish, new ones are refused at once; those still running
        # then are canceled (and cost their callers nothing).
        await server.stop(grace=5)
