"""`quota <username> [--requests-per-minute N] [--requests-per-day N] [--compute-seconds-per-month N]
[--tokens-per-minute N] [--tokens-per-day N]`."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.models import Plan
from portal.quotas import effective_limits
from portal.services import quota_set


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Set a user's limits (overriding the plan) and print the effective limits."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--requests-per-minute", type=non_negative)
        parser.add_argument("--requests-per-day", type=non_negative)
        parser.add_argument("--compute-seconds-per-month", type=non_negative)
        parser.add_argument("--tokens-per-minute", type=non_negative)
        parser.add_argument("--tokens-per-day", type=non_negative)
        parser.add_argument("--plan", help="move the user to this plan (by name)")

    def handle(self, *args, username: str, plan: str | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        new_plan = None
        if plan is not None:
            new_plan = Plan.objects.filter(name=plan).first()
            if new_plan is None:
                names = ", ".join(Plan.objects.values_list("name", flat=True))
                raise CommandError(f"No plan named {plan!r}. Plans: {names}.")
        overrides = {
            name: options[name]
            for name in (
                "requests_per_minute",
                "requests_per_day",
                "compute_seconds_per_month",
                "tokens_per_minute",
                "tokens_per_day",
            )
            if options[name] is not None
        }
        limits = (
            quota_set(user=user, plan=new_plan, **overrides)
            if (overrides or new_plan)
            else effective_limits(user)
        )
        self.stdout.write(f"Effective limits for {username} (plan {limits.plan}):")
        self.stdout.write(f"  requests per minute:       {limits.requests_per_minute}")
        self.stdout.write(f"  requests per day:          {limits.requests_per_day}")
        self.stdout.write(f"  compute seconds per month: {limits.compute_seconds_per_month}")
        self.stdout.write(f"  max upload bytes:          {limits.max_upload_bytes}")
        self.stdout.write(f"  max private models:        {limits.max_private_models}")
        self.stdout.write(f"  tokens per minute:         {limits.tokens_per_minute}")
        self.stdout.write(f"  tokens per day:            {limits.tokens_per_day}")
