"""`manage.py seed_demo` trains, exports, validates (in the sandbox child) and publishes the demo catalog."""

import re

import pytest
from django.core.management import call_command

from marketplace.models import Model, ModelVersion

pytestmark = pytest.mark.django_db


def test_seed_demo_loads_ready_models_with_measured_accuracy(client):
    call_command("seed_demo", "--no-text")
    demo = Model.objects.filter(owner__username="demo")
    assert sorted(demo.values_list("name", flat=True)) == [
        "digits",
        "digits-torchscript",
        "smollm2-chat",
        "wine",
    ]
    assert not demo.first().owner.has_usable_password()
    for model in demo:
        version = model.versions.get(number=1)
        assert version.status == ModelVersion.Status.READY, version.reason
        assert model.latest_format == version.format
    digits = demo.get(name="digits")
    accuracy = float(re.search(r"Held-out accuracy: ([\d.]+)%", digits.description).group(1))
    assert accuracy >= 95.0
    assert digits.labels == [str(d) for d in range(10)]
    assert digits.preprocessing["layout"] == "flat"
    assert digits.versions.get(number=1).signature["inputs"] == [
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}
    ]

    # demo/digits has its quantized version, measured, with the held-out accuracy of both on its card.
    original, optimized = digits.versions.order_by("number")
    assert optimized.status == ModelVersion.Status.READY, optimized.reason
    assert optimized.derived_from_id == original.pk
    assert optimized.optimization["method"] == "dynamic-int8"
    assert optimized.size == optimized.optimization["size_after"] < original.size
    assert optimized.optimization["agreement"] >= 0.95
    table = dict(re.findall(r"\| v(\d) \| [^|]+ \| ([\d.]+)% \|", digits.description))
    assert set(table) == {"1", "2"}
    assert float(table["1"]) == accuracy  # the card's two figures are the same measurement
    assert float(table["2"]) >= 95.0
    assert demo.get(name="digits-torchscript").versions.get().format == "torchscript"
    wine = demo.get(name="wine").versions.get().signature
    assert [o["datatype"] for o in wine["outputs"]] == ["INT64", "FP32"]

    page = client.get("/models/demo/digits/").content.decode()
    assert "Held-out accuracy" in page
    assert 'data-model="demo/digits"' in page
    assert "Optimized from v1 (dynamic-int8)" in page and "smaller" in page

    call_command("seed_demo", "--no-text")  # idempotent
    assert Model.objects.filter(owner__username="demo").count() == 4
    assert ModelVersion.objects.filter(model__owner__username="demo").count() == 5
