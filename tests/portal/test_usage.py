"""/api/v1/usage, /settings/usage/ (with its server-drawn chart) and the CSV exports."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.quotas import admit_prediction
from portal.usage import Usage, usage_record

from .conftest import bearer, issue_key, limit

pytestmark = pytest.mark.django_db


def record(user, version, *, api_key=None, count=1, days_ago=0, compute_ms=250.0):
    day = (timezone.now() - timedelta(days=days_ago)).date()
    usage = Usage(
        user_id=user.pk,
        api_key_id=api_key.pk if api_key else None,
        version_id=version.pk,
        day=day,
        succeeded=True,
        compute_ms=compute_ms,
        bytes_in=10,
        bytes_out=20,
    )
    usage_record([usage] * count)


def test_the_api_shows_plan_limits_used_and_remaining(client, alice, version):
    key, raw_key = issue_key(alice)
    limit(alice, requests_per_day=50)
    for _ in range(3):
        admit_prediction(user=alice, api_key=key)
    record(alice, version, api_key=key, count=3)
    record(alice, version, count=2, days_ago=2)
    body = client.get("/api/v1/usage", **bearer(raw_key)).json()
    assert body["plan"] == "Free"
    assert body["limits"]["requests_per_day"] == 50 and body["limits"]["requests_per_minute"] == 60
    assert body["used"]["requests_per_day"] == 3 and body["remaining"]["requests_per_day"] == 47
    assert body["used"]["compute_seconds_per_month"] == pytest.approx(1.25)
    assert body["remaining"]["compute_seconds_per_month"] == pytest.approx(3600 - 1.25)
    assert len(body["days"]) == 30
    assert body["days"][-1]["requests"] == 3 and body["days"][-3]["requests"] == 2
    assert body["days"][-1]["day"] == timezone.now().date().isoformat()


def test_the_api_rejects_a_bad_day_count(alice_client):
    response = alice_client.get("/api/v1/usage?days=0")
    assert response.status_code == 400 and "days" in response.json()
    assert alice_client.get("/api/v1/usage?days=abc").status_code == 400
    assert len(alice_client.get("/api/v1/usage?days=7").json()["days"]) == 7


def test_the_api_needs_a_caller(client):
    assert client.get("/api/v1/usage").status_code == 401


def test_the_page_shows_limits_and_a_chart_by_model_and_key(alice_client, alice, version):
    key, _ = issue_key(alice, name="batch job")
    admit_prediction(user=alice, api_key=key)
    record(alice, version, api_key=key, count=4)
    record(alice, version, count=1, days_ago=5)
    response = alice_client.get("/settings/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Free" in html and 'class="meter-used">1<' in html and "of 1000 requests" in html
    assert html.count('<svg class="chart"') == 2
    assert "<title>digits: 4 on" in html  # a bar of the by-model chart
    assert f"<title>batch job (mp_{key.prefix}): 4 on" in html and "<title>browser session: 1 on" in html
    assert "https://" not in html.split('<svg class="chart"')[1]  # drawn here, nothing fetched


def test_the_page_without_use_says_so(alice_client):
    html = alice_client.get("/settings/usage/").content.decode()
    assert "No predictions yet" in html


def test_the_page_requires_login(client):
    assert client.get("/settings/usage/").status_code == 302


def test_the_csv_export_has_the_users_rows_only(alice_client, alice, bob, version):
    record(alice, version, count=2)
    record(bob, version, count=5)
    response = alice_client.get("/settings/usage/export.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:3] == ["day", "user", "model"]
    assert len(rows) == 2
    assert rows[1][1:6] == ["alice", "alice/digits", "1", "", "2"]


def test_deleting_a_model_keeps_its_usage_in_the_days_totals(client, alice, version):
    from marketplace.models import Model, ModelVersion
    from marketplace.services import model_delete
    from portal.models import UsageDay

    other_model = Model.objects.create(owner=alice, name="other", task="other")
    other = ModelVersion.objects.create(
        model=other_model, number=1, file="models/cd/" + "cd" * 32, sha256="cd" * 32, size=1, status="ready"
    )
    day = timezone.now().date()
    for used, on in [(version, 2), (other, 3)]:
        usage_record([Usage(alice.pk, None, used.pk, day, True, 10.0, 1, 1)] * on)
    model_delete(model=version.model)
    model_delete(model=other_model)  # its rows meet the first model's, now versionless, on the same day
    rows = UsageDay.objects.filter(user=alice)
    assert [(row.version_id, row.requests, row.succeeded) for row in rows] == [(None, 5, 5)]


def test_the_page_and_the_admin_show_tokens_beside_requests(alice_client, alice, version, admin_client):
    from portal.quotas import tokens_reserve, tokens_settle

    chat = Usage(alice.pk, None, version.pk, timezone.now().date(), True, 5.0, 1, 1, 12, 30)
    usage_record([chat, chat])
    tokens_settle(tokens_reserve(user=alice, tokens=42), used=42)
    html = alice_client.get("/settings/usage/").content.decode()
    assert "Tokens today" in html and 'class="meter-used tokens-used">42<' in html
    assert '<td class="tokens">24 + 60</td>' in html
    users = admin_client.get("/admin/auth/user/").content.decode()
    assert "Tokens this month (prompt + completion)" in users and "24 + 60" in users
    days = admin_client.get("/admin/portal/usageday/").content.decode()
    assert "Prompt tokens" in days and "Completion tokens" in days
