"""The operations page, for staff, against a live deployment: it shows a runner replaced because the model it
ran needed more memory than a runner may use, and refreshes itself (the restart appears without a reload)."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from inference.runners.telemetry import STATUS_TTL_SECONDS
from portal.models import ApiKey
from portal.services import quota_set
from tests.conftest import PASSWORD, ServingStack
from tests.inference import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def memory_limited_stack(django_db_setup, tmp_path):
    stack = ServingStack(tmp_path, INFERENCE_RUNNER_MEMORY_MB="400", INFERENCE_RUNNERS="2").start()
    yield stack
    stack.stop()


def log_in(page, base: str, username: str) -> None:
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/")


def test_staff_see_a_runner_restarted_for_memory(page, memory_limited_stack, django_user_model, alice):
    base = memory_limited_stack.web.url
    django_user_model.objects.create_user("operator", "op@example.com", PASSWORD, is_staff=True)
    quota_set(user=alice, requests_per_minute=1000, requests_per_day=10_000)
    builders.publish(owner=alice, name="hungry", data=builders.memory_hungry_onnx())
    key = ApiKey.issue(user=alice, name="hungry", scopes=["read", "predict"])[1]

    log_in(page, base, "operator")
    page.goto(base + "/admin/operations/")
    runners = page.locator("#ops-runners")
    expect(runners).to_contain_text("yes", timeout=STATUS_TTL_SECONDS * 4000)
    expect(runners).not_to_contain_text("memory")

    response = requests.post(
        f"{base}/api/v1/models/alice/hungry/predict",
        json={"inputs": {"n": [2_000_000_000]}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    # The runner's memory limit is the server's 503 (inference/protocols/outcomes.py), recorded as failed.
    assert response.status_code == 503 and "more memory" in response.json()["detail"], response.text

    # No reload: the page's own polling brings the restart, and the failure with its reason.
    expect(runners).to_contain_text("memory: 1", timeout=20_000)
    expect(page.locator("#ops-failures")).to_contain_text("more memory than a runner may use", timeout=20_000)
    assert page.errors == []


def test_the_operations_page_is_for_staff_only(client, alice):
    client.force_login(alice)
    assert client.get("/admin/operations/").status_code == 302
    assert client.get("/admin/operations/status.json").status_code == 302


def test_the_admin_index_links_to_the_operations_page(client, django_user_model):
    staff = django_user_model.objects.create_user("operator", "op@example.com", PASSWORD, is_staff=True)
    client.force_login(staff)
    assert b'href="/admin/operations/"' in client.get("/admin/").content
    status = client.get("/admin/operations/status.json").json()
    assert set(status) == {"at", "unknown", "workers", "queues", "chat", "failures", "validations"}


def test_without_redis_or_with_redis_down_the_page_says_it_cannot_know_the_workers(
    client, django_user_model, settings
):
    from inference.scheduling import queue
    from tests.portal.test_outages import closed_redis_url

    staff = django_user_model.objects.create_user("operator", "op@example.com", PASSWORD, is_staff=True)
    client.force_login(staff)
    try:
        settings.REDIS_URL = ""  # the embedded default
        queue.reset_client()
        unknown = client.get("/admin/operations/status.json").json()
        assert unknown["workers"] is None and unknown["queues"] is None
        assert "REDIS_URL is not set" in unknown["unknown"]
        settings.REDIS_URL = closed_redis_url()
        queue.reset_client()
        down = client.get("/admin/operations/status.json").json()
        assert down["workers"] is None and "Redis is out of reach" in down["unknown"]
        # What the database knows is still shown.
        assert down["failures"] == [] and down["validations"] == []
    finally:
        queue.reset_client()


@pytest.mark.parametrize("redis", ["down", "not configured"])
def test_staff_read_that_the_workers_cannot_be_known_when_redis_is_down_or_not_configured(
    page, client, django_user_model, alice, tmp_path, redis
):
    from tests.conftest import SESSION_ENVIRON, WebServer
    from tests.portal.test_outages import closed_redis_url

    staff = django_user_model.objects.create_user("operator", "op@example.com", PASSWORD, is_staff=True)
    # Logged in before Redis went away (a login saves the user, which drops its cached limits from Redis:
    # with Redis down, the login page answers 503 like every write that needs it).
    client.force_login(staff)
    # What the database knows is still shown beside what cannot be known.
    version = builders.publish(owner=alice, name="waiting", data=builders.plus_one_onnx())
    version.status = version.Status.VALIDATING
    version.save(update_fields=["status"])
    # A web server of its own whose Redis stopped (nothing listens on its port), or the embedded default.
    web = WebServer(
        tmp_path / "web.log",
        workers=1,
        environ={**SESSION_ENVIRON, "REDIS_URL": closed_redis_url() if redis == "down" else ""},
    )
    web.start()
    try:
        session = client.cookies["sessionid"].value
        page.context.add_cookies([{"name": "sessionid", "value": session, "url": web.url}])
        response = page.goto(web.url + "/admin/operations/")
        assert response.status == 200
        notice = page.locator("#ops-unknown")
        if redis == "down":
            expect(notice).to_contain_text("Redis is out of reach, and with it the request queue")
        else:
            expect(notice).to_contain_text("REDIS_URL is not set")
        expect(page.locator("#ops-runners")).to_have_text("Unknown: see above.")
        expect(page.locator("#ops-queues")).to_have_text("Unknown: see above.")
        expect(page.locator("#ops-validations")).to_contain_text("alice/waiting")
        expect(page.locator("#ops-updated")).to_contain_text("Updated")
        expect(page.locator("#operations")).not_to_contain_text("No worker is serving")
        assert page.errors == []
    finally:
        web.stop()
