"""`createapikey <username> --scopes read,predict [--name NAME]`: the key alone on the last line of output."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.services import key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it (alone on the last line, for `tail -1`)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--scopes", default="read,predict", help="comma-separated: read, predict, upload")
        parser.add_argument("--name", default="command line")

    def handle(self, *args, username: str, scopes: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        try:
            key, raw_key = key_create(
                user=user, name=name, scopes=[s.strip() for s in scopes.split(",") if s.strip()]
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Created API key {key.name!r} ({key.display}) for {username} with scopes "
            f"{key.scopes_display}. It is shown once:"
        )
        self.stdout.write(raw_key)
