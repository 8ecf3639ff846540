"""Routes under /api/v1/ owned by this app."""

urlpatterns: list = []
