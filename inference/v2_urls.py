from django.urls import path

from . import v2

urlpatterns = [
    path("health/live", v2.health_live, name="v2-health-live"),
    path("health/ready", v2.health_ready, name="v2-health-ready"),
]
