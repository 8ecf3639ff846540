from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from marketplace.keyring import keys_rotate


class Command(BaseCommand):
    help = (
        "Re-wrap every model file's data key with the new master key MODEL_ENCRYPTION_KEY, unwrapping with "
        "the old one, MODEL_ENCRYPTION_KEY_OLD. The files are not re-encrypted. Safe to stop and run again."
    )
    # The start-up check would refuse the half-rotated state this command exists to finish.
    requires_system_checks = []

    def handle(self, *args, **options):
        try:
            rotation = keys_rotate()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        for failure in rotation.failed:
            self.stderr.write(f"not re-wrapped: {failure}")
        summary = (
            f"Re-wrapped the keys of {rotation.rewrapped} version(s); "
            f"{rotation.current} were under the new key already."
        )
        if rotation.failed:
            raise CommandError(f"{summary} {len(rotation.failed)} could not be re-wrapped (above).")
        self.stdout.write(self.style.SUCCESS(summary))
