"""The marketplace asks the user's plan how large an upload may be and how many private models they own."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser
from onnx import TensorProto, helper
from rest_framework.test import APIClient

from marketplace.models import Model
from portal.quotas import plan_upload_limit_for, private_model_limit_for
from tests.inference import builders

from .conftest import issue_key, limit

pytestmark = pytest.mark.django_db


def test_the_limits_come_from_the_plan_and_its_overrides(alice):
    assert plan_upload_limit_for(alice) == 500 * 1024 * 1024
    assert private_model_limit_for(alice) == 10
    quota = alice.quota
    quota.max_upload_bytes, quota.max_private_models = 1234, 2
    quota.save()
    assert (plan_upload_limit_for(alice), private_model_limit_for(alice)) == (1234, 2)


def test_an_anonymous_caller_gets_the_default_plan():
    assert plan_upload_limit_for(AnonymousUser()) == 500 * 1024 * 1024


def test_an_upload_over_the_users_plan_limit_gets_413(alice):
    limit(alice)  # the quota row exists
    quota = alice.quota
    quota.max_upload_bytes = 50
    quota.save()
    data = builders.onnx_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [("x", TensorProto.FLOAT, [-1, 3])],
        [("y", TensorProto.FLOAT, [-1, 3])],
    )
    assert len(data) > 50
    _, raw_key = issue_key(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    upload = io.BytesIO(data)
    upload.name = "model.onnx"
    response = client.post("/api/v1/models", {"name": "big", "file": upload}, format="multipart")
    assert response.status_code == 413
    assert "limit is 50 bytes" in response.json()["detail"]
    assert not Model.objects.filter(name="big").exists()
