from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

handler404 = "portal.views.page_not_found"
handler500 = "portal.views.server_error"

accounts = [
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]

settings_pages = [
    path("keys/", views.keys, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke_view, name="key-revoke"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
]

# The prediction routes come first: Django tries patterns in order, and they are most of the traffic.
urlpatterns = [
    path("", include("inference.protocols.oip_urls")),  # /v2 and /v2/…
    path("v1/", include("inference.protocols.openai_urls")),  # the OpenAI-compatible API
    path("api/v1/", include("inference.protocols.rest_urls")),
    path("api/v1/", include("portal.api_urls")),
    path("api/v1/", include("marketplace.api_urls")),
    path("metrics", views.metrics, name="metrics"),
    # Before the admin's own routes, which would answer 404 for it.
    path("admin/operations/", include("inference.operations_urls")),
    path("admin/", admin.site.urls),
    path("settings/", include(settings_pages)),
    path("accounts/", include(accounts)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file, as the Content-Security-Policy requires.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="portal/swagger_ui.html"),
        name="api-docs",
    ),
    path("", include("marketplace.urls")),
]
