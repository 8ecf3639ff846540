"""`make run` keeps DEBUG on for its conveniences, yet a mistyped address shows the site's own pages."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render


class SiteErrorPagesMiddleware:
    """Under DEBUG, Django answers a 404 or a crash with its technical page (the URL list, settings, a
    traceback). This puts the site's 404 and 500 pages in their place for browsers, as production shows them;
    the traceback still goes to the log. JSON answers (the APIs) pass through untouched."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not settings.DEBUG or response.status_code not in (404, 500):
            return response
        if not response.get("Content-Type", "").startswith("text/html") or response.streaming:
            return response
        if response.status_code == 404:
            from .views import page_not_found

            return page_not_found(request)
        return render(request, "500.html", status=500)
