"""Which Django handler answers a request in the data plane, and the lean one that runs predictions."""

from __future__ import annotations

import functools

from django.urls import Resolver404, get_resolver

from portal.handlers import MiddlewareListHandler
from portal.logs import PREDICT_ROUTES

# The only paths worth resolving here; anything else is the site's at once.
_PREDICTION_PATHS = (("/v2/models/", "/infer"), ("/api/v1/models/", "/predict"))


@functools.lru_cache(maxsize=4096)
def prediction_route(path: str):
    """The resolved prediction route of `path` (a ResolverMatch), or None for any other path.

    Cached per path (bounded): a match names only the view and the path's own arguments, so it is the same
    for every request to that path."""
    if not any(path.startswith(head) and path.endswith(tail) for head, tail in _PREDICTION_PATHS):
        return None
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return None
    return match if match.url_name in PREDICT_ROUTES else None


class PredictionHandler(MiddlewareListHandler):
    """Django's handler with `settings.DATA_PLANE_MIDDLEWARE` (the request log and id, the API's body limit,
    error shapes and rate-limit headers; none of what serves a browser) and cached route resolution."""

    middleware_setting = "DATA_PLANE_MIDDLEWARE"

    def resolve_request(self, request):
        match = prediction_route(request.path_info)
        if match is None:  # not reached through `program_prediction_route`, but answer as the site would
            return super().resolve_request(request)
        request.resolver_match = match
        return match


def program_prediction_route(method: str, path: str, headers: list[tuple[bytes, bytes]]):
    """The route of a program's call to run a model (a POST to a prediction route, without a cookie: a
    browser's calls keep the site's session, CSRF and login middleware), else None."""
    if method != "POST":
        return None
    route = prediction_route(path)
    if route is None or any(name == b"cookie" for name, _ in headers):
        return None
    return route
