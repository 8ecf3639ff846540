from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Accounts and access"

    def ready(self):
        from . import signals  # noqa: F401
