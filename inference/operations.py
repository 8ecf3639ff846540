"""The operations page for staff (`/admin/operations/`): workers and runners, queues, failures, validations.

The page is a shell; `static/js/operations.js` polls `status.json` every two seconds and fills it in (the
site's Content-Security-Policy allows no inline script). Workers are read from the status each supervisor
publishes to Redis with its heartbeat (`runners.telemetry`); failures and validations from the database.
"""

from __future__ import annotations

import json
import time

import redis
from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from marketplace.models import ModelVersion
from portal import metrics

from .models import Prediction
from .runners.telemetry import status_pattern
from .scheduling import queue

FAILURES_SHOWN = 20


# What the page says, above the tables it cannot fill, instead of drawing "no worker" and empty queues.
WORKERS_UNKNOWN_WITHOUT_REDIS = (
    "Workers publish their runners and queues through Redis, and REDIS_URL is not set (the embedded "
    "default): this page cannot show them. Calls run as jobs through the task queue."
)
WORKERS_UNKNOWN_REDIS_DOWN = (
    "Redis is out of reach, and with it the request queue: workers, runners and queue depths cannot be "
    "known until it is back."
)


def workers_status() -> tuple[list[dict] | None, str]:
    """Each live worker's last published status (they expire a few seconds after its last heartbeat), or
    None and the reason when they cannot be known."""
    if not queue.enabled():
        return None, WORKERS_UNKNOWN_WITHOUT_REDIS
    try:
        connection = queue.client()
        keys = sorted(connection.scan_iter(match=status_pattern(), count=100))
        blobs = connection.mget(keys) if keys else []
    except redis.RedisError:
        return None, WORKERS_UNKNOWN_REDIS_DOWN
    now = time.time()
    workers = []
    for blob in blobs:
        if blob:
            status = json.loads(blob)
            status["age"] = round(now - status["seen_at"], 1)
            workers.append(status)
    return workers, ""


def recent_failures() -> list[dict]:
    rows = (
        Prediction.objects.filter(status=Prediction.Status.FAILED)
        .order_by("-finished_at")
        .values(
            "id",
            "finished_at",
            "error",
            "source",
            "version__number",
            "version__model__owner__username",
            "version__model__name",
        )[:FAILURES_SHOWN]
    )
    return [
        {
            "id": str(row["id"]),
            "at": row["finished_at"].isoformat() if row["finished_at"] else None,
            "model": f"{row['version__model__owner__username']}/{row['version__model__name']}",
            "version": row["version__number"],
            "source": row["source"],
            "error": row["error"],
        }
        for row in rows
    ]


def validations_in_progress() -> list[dict]:
    rows = (
        ModelVersion.objects.filter(status=ModelVersion.Status.VALIDATING)
        .order_by("created_at")
        .values("number", "size", "created_at", "model__owner__username", "model__name")
    )
    return [
        {
            "model": f"{row['model__owner__username']}/{row['model__name']}",
            "version": row["number"],
            "size": row["size"],
            "since": row["created_at"].isoformat(),
        }
        for row in rows
    ]


def chat_models() -> list[dict]:
    """Chat models' time to first token and decode rate (medians, from the Prometheus histograms)."""
    first = metrics.histogram_medians("modelport_time_to_first_token_seconds")
    rates = metrics.histogram_medians("modelport_generation_tokens_per_second")
    return [
        {
            "model": model,
            "calls": calls,
            "ttft_ms": None if ttft == float("inf") else round(ttft * 1000),
            "tokens_per_second": None if model not in rates else rates[model][1],
        }
        for model, (calls, ttft) in sorted(first.items())
    ]


def operations_status() -> dict:
    """The page's data. `workers` and `queues` are null, and `unknown` says why, when they cannot be known."""
    workers, unknown = workers_status()
    queues: dict[str, int] = {}
    for worker in workers or []:
        for model, depth in worker["queues"].items():
            queues[model] = max(queues.get(model, 0), depth)  # one Redis queue, seen by every worker
    return {
        "at": time.time(),
        "unknown": unknown,
        "workers": workers,
        "queues": None
        if workers is None
        else [{"model": model, "depth": depth} for model, depth in sorted(queues.items())],
        "chat": chat_models(),
        "failures": recent_failures(),
        "validations": validations_in_progress(),
    }


@staff_member_required
@require_GET
def operations_page(request):
    # The first paint already says what cannot be known (the script keeps it current).
    _, unknown = workers_status()
    return render(request, "inference/operations.html", {"unknown": unknown})


@staff_member_required
@require_GET
def operations_status_json(request):
    return JsonResponse(operations_status())
