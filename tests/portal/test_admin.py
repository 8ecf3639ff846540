"""The admin: users with plan and month usage, plan changes that apply at once, keys, catalog, ledger, CSV."""

from __future__ import annotations

import pytest
from django.utils import timezone

from marketplace.models import Model
from portal.models import ApiKey, Plan, UsageDay
from portal.quotas import QuotaExceeded, admit_prediction
from portal.usage import Usage, usage_record

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db


def succeeded(user, version, *, compute_ms: float) -> Usage:
    return Usage(
        user_id=user.pk,
        api_key_id=None,
        version_id=version.pk,
        day=timezone.now().date(),
        succeeded=True,
        compute_ms=compute_ms,
        bytes_in=0,
        bytes_out=0,
    )


@pytest.fixture
def tiny_plan():
    return Plan.objects.create(
        name="Tiny",
        requests_per_minute=100,
        requests_per_day=2,
        compute_seconds_per_month=10,
        max_upload_bytes=1024,
        max_private_models=1,
    )


def user_change_form(user, **quota_fields) -> dict:
    quota = user.quota
    data = {
        "username": user.username,
        "email": user.email,
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
        "quota-TOTAL_FORMS": "1",
        "quota-INITIAL_FORMS": "1",
        "quota-MIN_NUM_FORMS": "0",
        "quota-MAX_NUM_FORMS": "1",
        "quota-0-id": str(quota.pk),
        "quota-0-user": str(user.pk),
        "quota-0-plan": str(quota.plan_id),
    }
    for name in (
        "requests_per_minute",
        "requests_per_day",
        "compute_seconds_per_month",
        "max_upload_bytes",
        "max_private_models",
    ):
        data[f"quota-0-{name}"] = ""
    data.update({f"quota-0-{name}": str(value) for name, value in quota_fields.items()})
    return data


def test_a_plan_changed_in_the_admin_applies_to_the_next_request(admin_client, alice, tiny_plan):
    for _ in range(3):
        admit_prediction(user=alice, api_key=None)  # the Free plan allows it (and caches the limits)
    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/", user_change_form(alice, plan=tiny_plan.pk)
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    alice.quota.refresh_from_db()
    assert alice.quota.plan == tiny_plan
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.limit_name == "requests_per_day" and rejected.value.limit == 2


def test_an_override_set_in_the_admin_applies_to_the_next_request(admin_client, alice):
    admit_prediction(user=alice, api_key=None)
    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/", user_change_form(alice, requests_per_day=1)
    )
    assert response.status_code == 302
    with pytest.raises(QuotaExceeded):
        admit_prediction(user=alice, api_key=None)


def test_editing_a_plan_applies_to_its_users_at_once(admin_client, alice):
    admit_prediction(user=alice, api_key=None)
    plan = alice.quota.plan
    response = admin_client.post(
        f"/admin/portal/plan/{plan.pk}/change/",
        {
            "name": plan.name,
            "requests_per_minute": 60,
            "requests_per_day": 1,
            "compute_seconds_per_month": 3600,
            "max_upload_bytes": plan.max_upload_bytes,
            "max_private_models": 10,
            "tokens_per_minute": plan.tokens_per_minute,
            "tokens_per_day": plan.tokens_per_day,
            "is_default": "on",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    with pytest.raises(QuotaExceeded):
        admit_prediction(user=alice, api_key=None)


def test_the_user_list_shows_plan_and_this_months_usage(admin_client, alice, version):
    usage_record([succeeded(alice, version, compute_ms=1500.0) for _ in range(3)])
    html = admin_client.get("/admin/auth/user/").content.decode()
    assert "requests this month" in html.lower()
    row = html[html.index(">alice<") :]
    row = row[: row.index("</tr>")]
    assert "Free" in row and ">3<" in row and ">4.5<" in row


def test_adding_a_user_in_the_admin_gives_the_default_plan(admin_client):
    response = admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": "carol",
            "password1": "a-long-pass-phrase-1",
            "password2": "a-long-pass-phrase-1",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="carol").quota.plan.is_default


def test_keys_can_be_revoked_in_the_admin_and_never_show_a_hash(admin_client, alice, client):
    key, raw_key = issue_key(alice)
    page = admin_client.get(f"/admin/portal/apikey/{key.pk}/change/").content.decode()
    assert key.display in page and key.hashed_key not in page
    assert key.hashed_key not in admin_client.get("/admin/portal/apikey/").content.decode()
    response = admin_client.post(
        "/admin/portal/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}, follow=True
    )
    assert b"Revoked 1 key(s)." in response.content
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert client.get("/api/v1/usage", **bearer(raw_key)).status_code == 401
    assert admin_client.get("/admin/portal/apikey/add/").status_code == 403


def test_models_can_be_unlisted_in_the_admin(admin_client, alice, version):
    model = version.model
    response = admin_client.post(
        "/admin/marketplace/model/", {"action": "unlist_models", "_selected_action": [model.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Model.objects.get(pk=model.pk).visibility == "private"


def test_usage_is_read_only_and_filterable(admin_client, alice, bob, version):
    usage_record([succeeded(alice, version, compute_ms=5.0), succeeded(bob, version, compute_ms=5.0)])
    usage = admin_client.get(f"/admin/portal/usageday/?user__id__exact={alice.pk}")
    assert usage.status_code == 200 and "alice/digits" in usage.content.decode()
    alices_row, bobs_row = (UsageDay.objects.get(user=user).pk for user in (alice, bob))
    assert f"/admin/portal/usageday/{alices_row}/change/" in usage.content.decode()
    assert f"/admin/portal/usageday/{bobs_row}/change/" not in usage.content.decode()
    assert admin_client.get("/admin/portal/usageday/add/").status_code == 403


def test_admins_export_usage_as_csv(admin_client, alice, bob, version):
    usage_record([succeeded(user, version, compute_ms=5.0) for user in (alice, bob)])
    ids = list(UsageDay.objects.values_list("pk", flat=True))
    response = admin_client.post("/admin/portal/usageday/", {"action": "export_csv", "_selected_action": ids})
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().splitlines()
    assert lines[0].startswith("day,user,model") and len(lines) == 3
    assert {line.split(",")[1] for line in lines[1:]} == {"alice", "bob"}


def page_text(response) -> str:
    """The page as read: tags dropped, entities decoded, spaces collapsed."""
    import html
    import re

    body = response.content.decode()
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_plan_list_shows_every_limit_with_its_unit(admin_client, tiny_plan):
    text = page_text(admin_client.get("/admin/portal/plan/"))
    for heading in ("Requests", "Compute", "Tokens", "Largest upload", "Private models"):
        assert heading in text, heading
    row = text[text.index("Tiny") :]
    assert "100 / min 2 / day 10 s / month 20,000 / min 200,000 / day 1.0 KB 1" in row, row[:300]


def test_a_plan_page_groups_its_limits_with_labels_and_help(admin_client, tiny_plan):
    text = page_text(admin_client.get(f"/admin/portal/plan/{tiny_plan.pk}/change/"))
    for section in ("Requests", "Compute", "Tokens (chat models)", "Uploads"):
        assert section in text, section
    assert "Tokens per minute" in text
    assert "Chat models: prompt plus completion tokens in one UTC minute." in text
    assert "Seconds of runner time in a calendar month (3600 = one hour)." in text
    assert "One model file, in bytes: 524288000 is 500 MB" in text


def test_a_users_page_shows_the_token_overrides_and_what_the_plan_gives(admin_client, alice):
    text = page_text(admin_client.get(f"/admin/auth/user/{alice.pk}/change/"))
    assert "Tokens (chat models): overrides" in text
    assert "Tokens per day" in text and "Empty: the plan's 200,000 / day." in text
    assert "Empty: the plan's 500.0 MB." in text

    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/", user_change_form(alice, tokens_per_day=5000)
    )
    assert response.status_code == 302
    alice.quota.refresh_from_db()
    assert alice.quota.tokens_per_day == 5000
    # The quotas list shows every user's effective limits, the user's own marked.
    row = page_text(admin_client.get("/admin/portal/quota/"))
    row = row[row.index("alice") :]
    assert "20,000 / min 5,000 / day (own)" in row, row[:300]
    assert admin_client.get("/admin/portal/quota/add/").status_code == 403
