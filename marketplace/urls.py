from django.urls import path

from . import views

MODEL = "models/<str:owner>/<str:name>/"

urlpatterns = [
    path("", views.home, name="home"),
    path("models/", views.browse, name="browse"),
    path("models/new/", views.model_upload, name="model-upload"),
    path(MODEL, views.model_detail, name="model-detail"),
    path(f"{MODEL}settings/", views.model_settings, name="model-settings"),
    path(f"{MODEL}versions/new/", views.version_upload, name="version-upload"),
    path(f"{MODEL}versions/<int:number>/optimize/", views.version_optimize, name="version-optimize"),
    path(f"{MODEL}edit/", views.model_edit, name="model-edit"),
    path(f"{MODEL}visibility/", views.model_toggle_visibility, name="model-visibility"),
    path(f"{MODEL}delete/", views.model_delete, name="model-delete"),
    path(f"{MODEL}access/", views.access_request_submit, name="model-access-request"),
    path(
        f"{MODEL}access/<int:id>/<str:decision>/",
        views.access_request_decide,
        name="model-access-decide",
    ),
    path("settings/access/", views.access_requests_page, name="access-requests"),
]
