"""Versions are immutable records: what a version is cannot change once it exists."""

import pytest

from marketplace.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_it_refuses_to_change_a_saved_version(publish):
    publish("tiny", notes="first")
    version = ModelVersion.objects.get(model__name="tiny")
    version.notes = "rewritten"
    with pytest.raises(ValueError, match="immutable"):
        version.save()
    version = ModelVersion.objects.get(model__name="tiny")
    version.sha256 = "0" * 64
    with pytest.raises(ValueError, match="sha256"):
        version.save()
    assert ModelVersion.objects.get(model__name="tiny").notes == "first"


def test_validation_fields_can_still_be_recorded(publish):
    publish("tiny")
    version = ModelVersion.objects.get(model__name="tiny")
    version.reason = "checked again"
    version.save()
    assert ModelVersion.objects.get(model__name="tiny").reason == "checked again"
