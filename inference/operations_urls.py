"""`/admin/operations/` (staff): the page and the JSON it polls."""

from django.urls import path

from . import operations

urlpatterns = [
    path("", operations.operations_page, name="operations"),
    path("status.json", operations.operations_status_json, name="operations-status"),
]
