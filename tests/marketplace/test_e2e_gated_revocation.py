"""A revoked access to a gated model holds on the very next request in every web process, though each keeps
the grant in memory."""

from __future__ import annotations

import pytest
import requests

from marketplace import services
from portal.models import ApiKey

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def download(live_web, key: str, slug: str) -> int:
    response = requests.get(
        f"{live_web.url}/api/v1/models/{slug}/versions/1/file",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.status_code


def test_a_revoked_grant_is_refused_on_the_very_next_request_by_every_web_process(live_web, publish, bob):
    model = publish("guarded", gated=True)
    _, key = ApiKey.issue(user=bob, name="k", scopes=["read"])
    access, _ = services.access_request_create(model=model, user=bob)
    # Enough calls that both gunicorn workers hold the refusal in memory; an approval replaces it everywhere.
    assert [download(live_web, key, model.slug) for _ in range(12)] == [403] * 12
    services.access_request_decide(request=access, approve=True)
    assert [download(live_web, key, model.slug) for _ in range(12)] == [200] * 12
    services.access_request_decide(request=access, approve=False)
    assert [download(live_web, key, model.slug) for _ in range(12)] == [403] * 12
