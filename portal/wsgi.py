"""The WSGI application (`gunicorn portal.wsgi`): two Django handlers, one for browsers, one for programs.

A request to the APIs (`settings.API_PATH_PREFIXES`) that carries no cookie is a program's: it authenticates
with a key or not at all, so sessions, CSRF, messages, the login lock-out and static files have nothing to do
for it. It goes through `settings.API_MIDDLEWARE`, the site's middleware without those (they cost a prediction
about as much as its view). Everything else, a browser's API calls included, goes through
`settings.MIDDLEWARE`.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
site = get_wsgi_application()  # sets Django up

from portal.handlers import MiddlewareListHandler  # noqa: E402 - needs the settings configured above

# e.g. encrypted model files and no key (or the wrong one): the server does not start, and says why.
from portal.startup import refuse_to_start  # noqa: E402 - needs the app registry loaded above

refuse_to_start()


class ApiHandler(MiddlewareListHandler):
    middleware_setting = "API_MIDDLEWARE"


def _make_application():
    from django.conf import settings

    api = ApiHandler()
    prefixes = tuple(settings.API_PATH_PREFIXES)

    def application(environ, start_response):
        if "HTTP_COOKIE" not in environ and environ.get("PATH_INFO", "").startswith(prefixes):
            return api(environ, start_response)
        return site(environ, start_response)

    return application


application = _make_application()
