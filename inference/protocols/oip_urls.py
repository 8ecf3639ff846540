"""The Open Inference Protocol's routes, /v2 and below (included at the site's root)."""

from django.urls import include, path

from . import oip

model = "models/<str:owner>/<str:name>"
version = "models/<str:owner>/<str:name>/versions/<int:number>"

v2_routes = [  # inference first: the routes are tried in order
    path(f"{model}/infer", oip.model_infer, name="v2-model-infer"),
    path(f"{version}/infer", oip.model_infer, name="v2-version-infer"),
    path("", oip.server_metadata, name="v2-server-metadata"),
    path("health/live", oip.health_live, name="v2-health-live"),
    path("health/ready", oip.health_ready, name="v2-health-ready"),
    path(model, oip.model_metadata, name="v2-model-metadata"),
    path(version, oip.model_metadata, name="v2-version-metadata"),
    path(f"{model}/ready", oip.model_ready, name="v2-model-ready"),
    path(f"{version}/ready", oip.model_ready, name="v2-version-ready"),
    path(f"{model}/stats", oip.model_statistics, name="v2-model-stats"),
    path(f"{version}/stats", oip.model_statistics, name="v2-version-stats"),
]

urlpatterns = [
    path("v2", oip.server_metadata),  # tritonclient asks for /v2 exactly (no redirect to /v2/)
    path("v2/", include(v2_routes)),
]
