from django.core.management.base import BaseCommand

from marketplace.synthetic import seed_synthetic_catalog


class Command(BaseCommand):
    help = "Add synthetic catalog rows quickly (bulk inserts) to measure browsing and search at scale."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=10_000)
        parser.add_argument("--owners", type=int, default=200)
        parser.add_argument("--private-share", type=float, default=0.1)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, count: int, owners: int, private_share: float, seed: int, **options):
        created = seed_synthetic_catalog(
            count=count,
            owners=owners,
            private_share=private_share,
            seed=seed,
            log=lambda line: self.stdout.write(line),
        )
        self.stdout.write(self.style.SUCCESS(f"Added {created} synthetic models."))
