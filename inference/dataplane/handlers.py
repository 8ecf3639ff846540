"""Which requests the data plane's own endpoints answer: a program's calls to run a model."""

from __future__ import annotations

import functools

from django.urls import Resolver404, get_resolver

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


def program_prediction_route(method: str, path: str, headers: list[tuple[bytes, bytes]]):
    """The route of a program's call to run a model (a POST to a prediction route, without a cookie: a
    browser's calls keep the site's session, CSRF and login middleware), else None."""
    if method != "POST":
        return None
    route = prediction_route(path)
    if route is None or any(name == b"cookie" for name, _ in headers):
        return None
    return route
