"""Synthetic catalog rows for measuring browsing and search at scale (`manage.py seed_catalog`)."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from .models import Format, Model, Task, Visibility

WORDS = (
    "vision text audio tabular digits wine iris resnet mobilenet bert gpt tiny small large fast quantized "
    "classifier regressor detector segmenter embedding sentiment toxicity spam fraud churn price forecast "
    "retail medical satellite traffic weather speech language translation summarize ranking recommendation "
    "anomaly credit insurance energy sensor robot agriculture crop leaf flower bird dog cat face emotion "
    "handwriting ocr receipt invoice legal finance sports music genre movie review news topic keyword"
).split()
BATCH = 5000


def synthetic_owners(count: int):
    User = get_user_model()
    names = [f"synthetic-{i:04d}" for i in range(count)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    new = []
    for name in names:
        if name not in existing:
            user = User(username=name, email=f"{name}@example.com")
            user.set_unusable_password()
            new.append(user)
    User.objects.bulk_create(new, batch_size=BATCH)
    return list(User.objects.filter(username__in=names))


@contextmanager
def timestamps_as_given():
    """Let bulk inserts keep the spread-out timestamps they were given instead of stamping them all "now"."""
    fields = [Model._meta.get_field("created_at"), Model._meta.get_field("updated_at")]
    saved = [(field.auto_now, field.auto_now_add) for field in fields]
    for field in fields:
        field.auto_now = field.auto_now_add = False
    try:
        yield
    finally:
        for field, (auto_now, auto_now_add) in zip(fields, saved, strict=True):
            field.auto_now, field.auto_now_add = auto_now, auto_now_add


def seed_synthetic_catalog(
    *, count: int, owners: int = 200, private_share: float = 0.1, seed: int = 0, log=print
) -> int:
    """Bulk-insert `count` synthetic public/private models with cards, tags and counters; returns how many."""
    rng = random.Random(seed)
    users = synthetic_owners(max(owners, 1))
    tasks = [choice.value for choice in Task]
    formats = [choice.value for choice in Format]
    start = time.monotonic()
    offset = Model.objects.filter(name__startswith="syn-").count()
    created = 0
    now = timezone.now()
    while created < count:
        rows = []
        for index in range(created, min(created + BATCH, count)):
            words = rng.sample(WORDS, 6)
            created_at = now - timedelta(minutes=rng.randint(60 * 24 * 30, 60 * 24 * 365))
            rows.append(
                Model(
                    owner=rng.choice(users),
                    name=f"syn-{words[0]}-{words[1]}-{offset + index}",
                    task=rng.choice(tasks),
                    description=f"# {words[0].title()} {words[1]}\n\nA synthetic {words[2]} model "
                    f"for {words[3]} and {words[4]} workloads.",
                    tags=[words[1], words[5], "synthetic"],
                    license="MIT",
                    visibility=Visibility.PRIVATE if rng.random() < private_share else Visibility.PUBLIC,
                    latest_format=rng.choice(formats),
                    downloads=int(rng.paretovariate(1.2)) * 10,
                    runs=int(rng.paretovariate(1.1)) * 25,
                    created_at=created_at,
                    updated_at=created_at + timedelta(minutes=rng.randint(0, 60 * 24 * 30)),
                )
            )
        with transaction.atomic(), timestamps_as_given():
            Model.objects.bulk_create(rows, batch_size=BATCH)
        created += len(rows)
        log(f"  {created}/{count} models ({time.monotonic() - start:.1f} s)")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE marketplace_model")
    return created
