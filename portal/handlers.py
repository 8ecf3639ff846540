"""Django's WSGI handler with a middleware list of its own (a settings name), for requests known to need less
than the site's `settings.MIDDLEWARE`: a program's API calls (`portal.wsgi`), a data plane's predictions."""

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler


class MiddlewareListHandler(WSGIHandler):
    middleware_setting = "MIDDLEWARE"

    def load_middleware(self, is_async=False):
        site_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = getattr(settings, self.middleware_setting)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_middleware
