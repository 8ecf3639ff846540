"""`manage.py seed_catalog` bulk-inserts searchable synthetic rows."""

import pytest
from django.core.management import call_command

from marketplace.models import Model

pytestmark = pytest.mark.django_db


def test_seed_catalog_adds_rows_that_lists_filters_and_search_find(client):
    call_command("seed_catalog", count=600, owners=5, private_share=0.2)
    assert Model.objects.filter(name__startswith="syn-").count() == 600
    public = Model.objects.filter(name__startswith="syn-", visibility="public").count()
    assert 0 < public < 600
    assert client.get("/api/v1/models?page_size=5").json()["count"] == public
    found = client.get("/api/v1/models", {"q": "synthetic"}).json()
    assert found["count"] == public  # the database trigger filled the search document of bulk inserts
    assert client.get("/api/v1/models", {"tag": "synthetic", "sort": "-created"}).json()["count"] == public
    created = [
        m["created_at"] for m in client.get("/api/v1/models?sort=-created&page_size=50").json()["results"]
    ]
    assert created == sorted(created, reverse=True) and len(set(created)) > 1

    call_command("seed_catalog", count=10, owners=5)  # adds more, never clashes with earlier names
    assert Model.objects.filter(name__startswith="syn-").count() == 610
