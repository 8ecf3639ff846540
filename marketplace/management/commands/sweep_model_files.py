from datetime import timedelta

from django.core.management.base import BaseCommand

from marketplace.services import stored_files_sweep


class Command(BaseCommand):
    help = (
        "Remove model files no version refers to and unfinished S3 multipart uploads, older than --hours: "
        "what an upload leaves when its web process is killed mid-way. Run it daily (cron)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24)

    def handle(self, *args, hours: float, **options):
        removed, aborted = stored_files_sweep(older_than=timedelta(hours=hours))
        for name in removed:
            self.stdout.write(f"removed {name}")
        summary = f"Removed {len(removed)} unused file(s), aborted {aborted} unfinished upload(s)."
        self.stdout.write(self.style.SUCCESS(summary))
