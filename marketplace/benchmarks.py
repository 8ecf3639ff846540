"""Catalog latency at scale, measured through the real `/api/v1/models` view
(middleware, DRF, FilterSet, SQL).

`run_catalog_benchmark()` is what the `benchmark` management command calls; seed rows first with
`manage.py seed_catalog --count 100000`.
"""

from __future__ import annotations

import statistics
import time

from django.conf import settings
from django.test import Client

from .models import Model

CATALOG_QUERIES = {
    "list (default sort)": "/api/v1/models",
    "list sorted by -updated": "/api/v1/models?sort=-updated",
    "list page 50 (or the last)": "/api/v1/models?page={deep_page}",
    "filter task + format": "/api/v1/models?task=image-classification&format=onnx",
    "filter tag": "/api/v1/models?tag=vision",
    "search common word": "/api/v1/models?q=classifier",
    "search two words": "/api/v1/models?q=medical+detector",
    "search rare word + sort name": "/api/v1/models?q=agriculture&sort=name",
    "search no match": "/api/v1/models?q=zyzzyva",
}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run_catalog_benchmark(*, iterations: int = 40, warmup: int = 3, user=None) -> dict[str, dict]:
    """p50/p95/max in milliseconds per catalog query, as `user` (default: an anonymous caller).

    Raises if a query does not answer 200.
    """
    host = next(
        (h for h in settings.ALLOWED_HOSTS if h not in {"*", ""} and not h.startswith(".")), "localhost"
    )
    client = Client(HTTP_HOST=host)
    if user is not None:
        client.force_login(user)
    results: dict[str, dict] = {"catalog rows": {"count": Model.objects.count()}}
    listed = client.get("/api/v1/models").json()["count"]
    deep_page = max(1, min(50, -(-listed // 20)))
    for label, template in CATALOG_QUERIES.items():
        url = template.format(deep_page=deep_page)
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
            "matches": response.json()["count"],
        }
    return results
