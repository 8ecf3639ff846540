from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from marketplace.keyring import clear_files_seal


class Command(BaseCommand):
    help = (
        "Encrypt, under MODEL_ENCRYPTION_KEY, the model files and tokenizers stored in the clear (uploaded "
        "before the key was set). Safe to stop and run again."
    )

    def handle(self, *args, **options):
        try:
            sealing = clear_files_seal()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        for name in sealing.sealed:
            self.stdout.write(f"encrypted {name}")
        for name in sealing.missing:
            self.stdout.write(f"not in storage (a rejected version's file): {name}")
        for failure in sealing.failed:
            self.stderr.write(f"not encrypted: {failure}")
        summary = f"Encrypted {len(sealing.sealed)} file(s)."
        if sealing.failed:
            raise CommandError(f"{summary} {len(sealing.failed)} could not be (above).")
        self.stdout.write(self.style.SUCCESS(summary))
