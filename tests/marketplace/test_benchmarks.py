"""The catalog benchmark the lead's `benchmark` command calls."""

import pytest
from django.core.management import call_command

from marketplace.benchmarks import CATALOG_QUERIES, run_catalog_benchmark

pytestmark = pytest.mark.django_db


def test_the_catalog_benchmark_measures_every_query(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("seed_catalog", count=200, owners=3)
    results = run_catalog_benchmark(iterations=3, warmup=1)
    assert results["catalog rows"]["count"] == 200
    for label in CATALOG_QUERIES:
        assert 0 < results[label]["p50_ms"] <= results[label]["p95_ms"] <= results[label]["max_ms"]
    assert results["search no match"]["matches"] == 0
