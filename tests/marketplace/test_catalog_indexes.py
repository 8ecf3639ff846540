"""The catalog's owner and tag filters are answered from an index, checked with PostgreSQL's EXPLAIN.

At a million models a scan of the model table costs most of a second (issue 18); at the few thousand rows a
test can afford, the planner still prefers a scan whenever no fit index exists. So each test captures the SQL
a real request ran, asks PostgreSQL for its plan with fresh statistics (ANALYZE, no planner switches), and
asserts that the model table is read through the index meant for that filter, never scanned whole. Dropping
the index, or filtering in a way that cannot use it (a join on the username), fails these tests.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.models import Format, Model

pytestmark = pytest.mark.django_db

CATALOG_ROWS = 4000
# Few owners, so each has many models: then a join on the username (estimated at the average owner's share)
# makes the planner walk a sort index of the whole table for bob, as it did at a million rows in issue 18.
OWNERS = 5
OWNER_INDEXES = {"model_owner_downloads", "model_name_unique_per_owner"}


@pytest.fixture
def big_catalog(bob):
    """4,000 seeded models over 5 owners, bob's two, then the statistics the planner works from."""
    call_command("seed_catalog", count=CATALOG_ROWS, owners=OWNERS)
    Model.objects.bulk_create(
        Model(owner=bob, name=name, latest_format=Format.ONNX, tags=["rare-tag"]) for name in ("one", "two")
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE marketplace_model")


def plans_of(client, url: str, *, page_only: bool = False) -> list[dict]:
    """The plans of the queries on the model table that answering `url` ran (the page's, and the count's)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    plans = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            if '"marketplace_model"' not in sql.split(" WHERE ")[0] or (page_only and " LIMIT " not in sql):
                continue
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            explained = cursor.fetchone()[0]
            plans.append((json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"])
    assert plans, f"no query on the model table answered {url}"
    return plans


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_of_model_table(plans: list[dict]) -> list[str]:
    return [
        node["Node Type"]
        for plan in plans
        for node in nodes(plan)
        if node.get("Relation Name") == "marketplace_model" and node["Node Type"] == "Seq Scan"
    ]


def indexes_used(plans: list[dict]) -> set[str]:
    return {node["Index Name"] for plan in plans for node in nodes(plan) if "Index Name" in node}


def test_the_owner_filter_reads_an_owner_index(client, big_catalog):
    plans = plans_of(client, "/api/v1/models?owner=bob")
    assert scans_of_model_table(plans) == []
    assert indexes_used(plans) & OWNER_INDEXES
    listed = client.get("/api/v1/models?owner=bob").json()["results"]
    assert sorted(m["name"] for m in listed) == ["one", "two"]


@pytest.mark.parametrize("sort", ["-updated", "name", "-created"])
def test_the_owner_filter_reads_an_owner_index_whatever_the_sort(client, big_catalog, sort):
    plans = plans_of(client, f"/api/v1/models?owner=bob&sort={sort}")
    assert scans_of_model_table(plans) == []
    assert indexes_used(plans) & OWNER_INDEXES


def test_a_big_owners_page_comes_in_order_from_the_owner_sort_index(client, big_catalog):
    page = plans_of(client, "/api/v1/models?owner=synthetic-0003", page_only=True)
    assert scans_of_model_table(page) == []
    assert "model_owner_downloads" in indexes_used(page)


def test_the_browse_page_filters_owners_through_the_index_too(client, big_catalog):
    plans = plans_of(client, "/models/?owner=bob")
    assert scans_of_model_table(plans) == []
    assert indexes_used(plans) & OWNER_INDEXES


def test_an_unknown_owner_lists_nothing_without_reading_models(client, big_catalog):
    with CaptureQueriesContext(connection) as captured:
        body = client.get("/api/v1/models?owner=nobody-at-all").json()
    assert body["count"] == 0 and body["results"] == []
    assert not [q for q in captured.captured_queries if '"marketplace_model"' in q["sql"]]


def test_the_tag_filter_reads_the_tags_gin_index(client, big_catalog):
    plans = plans_of(client, "/api/v1/models?tag=rare-tag")
    assert scans_of_model_table(plans) == []
    assert "model_tags_gin" in indexes_used(plans)
    assert sorted(m["name"] for m in client.get("/api/v1/models?tag=rare-tag").json()["results"]) == [
        "one",
        "two",
    ]


def test_a_common_tag_is_read_through_an_index_too(client, big_catalog):
    # A tag on a few percent of the catalog: the page is read from the sort index, stopping after 20 matches,
    # and the count from the tags' GIN index; neither scans the table.
    plans = plans_of(client, "/api/v1/models?tag=vision")
    assert scans_of_model_table(plans) == []
