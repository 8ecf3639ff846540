"""Catalog latency at scale, measured through the real views: `/api/v1/models` (middleware, DRF, FilterSet,
SQL) and the `/models/` browse page (template included).

`run_catalog_benchmark()` is what `manage.py benchmark --catalog` calls; `catalog_size` (`--catalog-size`)
first tops the synthetic catalog up to that many rows (`seed_catalog`), else seed it yourself, e.g.
`manage.py seed_catalog --count 1000000` then `VACUUM ANALYZE`.
"""

from __future__ import annotations

import statistics
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from .filters import SORTS
from .models import Format, Model, Task
from .pagination import Keyset
from .selectors import listed_models
from .synthetic import seed_synthetic_catalog

# An owner with two models, the case that once walked the whole catalog (issue 18); the benchmark adds them.
SMALL_OWNER = "benchmark-small-owner"
# A seeded owner: with the default 200 owners, about 1/200th of the catalog.
BIG_OWNER = "synthetic-0000"
API_PAGE_SIZE = 20
BROWSE_PAGE_SIZE = 20

CATALOG_QUERIES = {
    "list (default sort)": "/api/v1/models",
    "list sorted by -updated": "/api/v1/models?sort=-updated",
    "list page 50 (or the last)": "/api/v1/models?page={page_50}",
    "list deepest numbered page": "/api/v1/models?page={api_last_page}",
    "list by cursor, mid-catalog": "/api/v1/models?cursor={middle_cursor}",
    "filter task + format": "/api/v1/models?task=image-classification&format=onnx",
    "filter tag": "/api/v1/models?tag=vision",
    "filter tag, sorted by name": "/api/v1/models?tag=vision&sort=name",
    "owner with 2 models": f"/api/v1/models?owner={SMALL_OWNER}",
    "owner with 2 models, by -updated": f"/api/v1/models?owner={SMALL_OWNER}&sort=-updated",
    "big owner": f"/api/v1/models?owner={BIG_OWNER}",
    "big owner, sorted by name": f"/api/v1/models?owner={BIG_OWNER}&sort=name",
    "owner + search": f"/api/v1/models?owner={BIG_OWNER}&q=classifier",
    "search common word": "/api/v1/models?q=classifier",
    "search two words": "/api/v1/models?q=medical+detector",
    "search rare word + sort name": "/api/v1/models?q=agriculture&sort=name",
    "search no match": "/api/v1/models?q=zyzzyva",
    "browse page": "/models/",
    "browse page, owner with 2": f"/models/?owner={SMALL_OWNER}",
    "browse page, deepest page": "/models/?page={browse_last_page}",
}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ensure_catalog_size(size: int, *, log=print) -> None:
    """Add synthetic rows until the catalog holds `size` models, then refresh the planner's statistics."""
    missing = size - Model.objects.count()
    if missing > 0:
        seed_synthetic_catalog(count=missing, log=log)  # ends with ANALYZE
        # VACUUM also marks the new pages all-visible, as on a settled production table; it cannot run
        # inside a transaction (a test's), where ANALYZE alone has to do.
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE marketplace_model")


def ensure_small_owner() -> None:
    owner, _ = get_user_model().objects.get_or_create(
        username=SMALL_OWNER, defaults={"email": f"{SMALL_OWNER}@example.com"}
    )
    for name in ("small-one", "small-two"):
        Model.objects.get_or_create(
            owner=owner,
            name=name,
            defaults={"task": Task.OTHER, "latest_format": Format.ONNX, "tags": ["vision"]},
        )


def middle_cursor() -> str:
    """A cursor half way down the default list, as a client walking the catalog would hold one."""
    queryset = listed_models(None).order_by(*SORTS["-downloads"])
    middle = queryset.count() // 2
    row = queryset[middle : middle + 1].first() or queryset.first()
    return Keyset(queryset).encode(row, backwards=False) if row else ""


def run_catalog_benchmark(
    *, iterations: int = 40, warmup: int = 3, user=None, catalog_size: int | None = None
) -> dict[str, dict]:
    """p50/p95/max in milliseconds per catalog query, as `user` (default: an anonymous caller).

    Raises if a query does not answer 200.
    """
    if catalog_size:
        ensure_catalog_size(catalog_size)
    ensure_small_owner()
    host = next(
        (h for h in settings.ALLOWED_HOSTS if h not in {"*", ""} and not h.startswith(".")), "localhost"
    )
    client = Client(HTTP_HOST=host)
    if user is not None:
        client.force_login(user)
    results: dict[str, dict] = {"catalog rows": {"count": Model.objects.count()}}
    listed = client.get("/api/v1/models").json()["count"]
    pages = -(-listed // API_PAGE_SIZE)
    places = {
        "page_50": max(1, min(50, pages)),
        "api_last_page": max(1, min(settings.MODEL_LIST_MAX_PAGED_ROWS // API_PAGE_SIZE, pages)),
        "browse_last_page": max(
            1, min(settings.MODEL_BROWSE_MAX_ROWS // BROWSE_PAGE_SIZE, -(-listed // BROWSE_PAGE_SIZE))
        ),
        "middle_cursor": middle_cursor(),
    }
    for label, template in CATALOG_QUERIES.items():
        url = template.format(**places)
        samples = []
        for attempt in range(warmup + iterations):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.content[:200]!r}")
            if attempt >= warmup:
                samples.append(elapsed)
        results[label] = {
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(percentile(samples, 0.95), 1),
            "max_ms": round(max(samples), 1),
            # A page's count is in its HTML; the API's in its body.
            "matches": response.json()["count"] if url.startswith("/api/") else "page",
        }
    return results
