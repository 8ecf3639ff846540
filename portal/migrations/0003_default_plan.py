from django.conf import settings
from django.db import migrations

FREE = dict(
    requests_per_minute=60,
    requests_per_day=1000,
    compute_seconds_per_month=3600,
    max_upload_bytes=500 * 1024 * 1024,
    max_private_models=10,
)


def create_default_plan(apps, schema_editor):
    Plan = apps.get_model("portal", "Plan")
    Quota = apps.get_model("portal", "Quota")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    plan, _ = Plan.objects.get_or_create(name="Free", defaults=dict(FREE, is_default=True))
    if not Plan.objects.filter(is_default=True).exists():
        Plan.objects.filter(pk=plan.pk).update(is_default=True)
    Quota.objects.bulk_create(
        [Quota(user_id=user_id, plan=plan) for user_id in User.objects.filter(quota__isnull=True).values_list("pk", flat=True)]
    )


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_plans_quotas_usage"), migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [migrations.RunPython(create_default_plan, migrations.RunPython.noop)]
