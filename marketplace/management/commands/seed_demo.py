from django.core.management.base import BaseCommand, CommandError

from marketplace.demo import DemoModelFailed, seed_demo_catalog


class Command(BaseCommand):
    help = (
        "Load the demo catalog: models trained now on scikit-learn's bundled datasets, "
        "owned by the demo user."
    )

    def handle(self, *args, **options):
        try:
            seed_demo_catalog(log=lambda line: self.stdout.write(line))
        except DemoModelFailed as exc:
            raise CommandError(str(exc)) from exc
