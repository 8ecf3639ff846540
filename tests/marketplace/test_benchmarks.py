"""The catalog benchmark the lead's `benchmark` command calls."""

import pytest
from django.core.management import call_command

from marketplace.benchmarks import CATALOG_QUERIES, run_catalog_benchmark
from marketplace.models import Model

pytestmark = pytest.mark.django_db


def test_the_catalog_benchmark_measures_every_query(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("seed_catalog", count=200, owners=3)
    results = run_catalog_benchmark(iterations=3, warmup=1)
    assert results["catalog rows"]["count"] == 202  # and the small owner's two models it adds
    for label in CATALOG_QUERIES:
        assert 0 < results[label]["p50_ms"] <= results[label]["p95_ms"] <= results[label]["max_ms"]
    assert results["search no match"]["matches"] == 0
    assert results["owner with 2 models"]["matches"] == 2
    assert results["big owner"]["matches"] > 0


def test_it_tops_the_catalog_up_to_the_size_asked(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("seed_catalog", count=100, owners=3)
    results = run_catalog_benchmark(iterations=1, warmup=0, catalog_size=250)
    assert Model.objects.filter(name__startswith="syn-").count() == 250
    assert results["catalog rows"]["count"] == 252
    run_catalog_benchmark(iterations=1, warmup=0, catalog_size=250)  # already there: adds nothing
    assert Model.objects.count() == 252
