"""`make run`: migrate, ensure an admin and a demo user, load the demo catalog, then serve it all: the data
plane (every HTTP path), a Celery worker and the gRPC server."""

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from portal.metrics import metrics_dir_wipe


def ensure_user(username: str, *, staff: bool, password_env: str) -> str | None:
    """Create the user if missing; return the password when it was made up here (to print it once)."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = os.environ.get(password_env) or secrets.token_urlsafe(12)
    User.objects.create_user(
        username, f"{username}@example.com", password, is_staff=staff, is_superuser=staff
    )
    return password if not os.environ.get(password_env) else "(from $" + password_env + ")"


class Command(BaseCommand):
    help = (
        "Migrate, bootstrap users and the demo catalog, then run the data plane (every HTTP path), a Celery "
        "worker and the gRPC server until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="skip loading the demo catalog")

    def handle(self, *args, port: int, no_seed: bool, **options):
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        admin_name = os.environ.get("ADMIN_USERNAME", "admin")
        created = {
            admin_name: ensure_user(admin_name, staff=True, password_env="ADMIN_PASSWORD"),  # noqa: S106
            "demo": ensure_user("demo", staff=False, password_env="DEMO_PASSWORD"),  # noqa: S106
        }
        for username, password in created.items():
            if password:
                self.stdout.write(self.style.WARNING(f"Created user {username!r} with password: {password}"))
                self.stdout.write(
                    "  (shown once; change it with `python manage.py changepassword " + username + "`)"
                )
        if not no_seed and "seed_demo" in get_commands():
            call_command("seed_demo")

        # The deployment starts here: its metrics start from zero, in the folder all three processes share.
        metrics_dir_wipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", PROMETHEUS_MULTIPROC_DIR=str(settings.METRICS_DIR))
        bin_dir = os.path.dirname(sys.executable)
        processes = [
            # The data plane answers every path: predictions on its fast path, the rest as the site.
            subprocess.Popen(
                [sys.executable, "manage.py", "dataplane", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=settings.BASE_DIR,
            ),
            subprocess.Popen(
                [
                    os.path.join(bin_dir, "celery"),
                    "-A",
                    "portal",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "2",
                ],
                env=env,
            ),
            subprocess.Popen(
                [sys.executable, "manage.py", "grpcserver", "--host", "127.0.0.1"],
                env=env,
                cwd=settings.BASE_DIR,
            ),
        ]
        self.stdout.write(
            self.style.SUCCESS(
                f"Modelport is running at http://127.0.0.1:{port}/, gRPC on port {settings.GRPC_PORT} "
                "(Ctrl-C stops it)"
            )
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.3)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.stdout.write("Stopped web, worker and gRPC server.")
