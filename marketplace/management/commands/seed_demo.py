from django.core.management.base import BaseCommand, CommandError

from marketplace.demo import seed_demo_catalog
from marketplace.demo_entries import DemoModelFailed


class Command(BaseCommand):
    help = (
        "Load the demo catalog: models trained now on scikit-learn's bundled datasets, the pretrained "
        "sentence encoder all-MiniLM-L6-v2 exported to ONNX and a topic classifier on it, owned by the demo "
        "user."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-text", action="store_true", help="leave out the text models (their export takes a while)"
        )

    def handle(self, *args, no_text: bool = False, **options):
        try:
            seed_demo_catalog(log=lambda line: self.stdout.write(line), text=not no_text)
        except DemoModelFailed as exc:
            raise CommandError(str(exc)) from exc
