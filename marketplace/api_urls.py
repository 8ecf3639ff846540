"""Routes under /api/v1/ owned by this app."""

from django.urls import path

from . import api

MODEL = "models/<str:owner>/<str:name>"
VERSION = f"{MODEL}/versions/<int:number>"

urlpatterns = [
    path("models", api.ModelListCreateView.as_view(), name="api-models"),
    path(MODEL, api.ModelDetailView.as_view(), name="api-model"),
    path(f"{MODEL}/versions", api.VersionListCreateView.as_view(), name="api-versions"),
    path(VERSION, api.VersionDetailView.as_view(), name="api-version"),
    path(f"{VERSION}/file", api.VersionFileView.as_view(), name="api-version-file"),
    path(f"{VERSION}/optimize", api.VersionOptimizeView.as_view(), name="api-version-optimize"),
    path(f"{MODEL}/access-requests", api.AccessRequestListCreateView.as_view(), name="api-access-requests"),
    path(
        f"{MODEL}/access-requests/<int:id>/approve",
        api.AccessRequestApproveView.as_view(),
        name="api-access-request-approve",
    ),
    path(
        f"{MODEL}/access-requests/<int:id>/deny",
        api.AccessRequestDenyView.as_view(),
        name="api-access-request-deny",
    ),
]
