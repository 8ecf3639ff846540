from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Accounts and access"

    def ready(self):
        from . import admin, signals  # noqa: F401

        # Registered here, after every app's admin module ran, so whichever app registers the catalog and
        # predictions first keeps its admin and we only add ours where there is none.
        admin.register_catalog_admins()
