from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"

    def ready(self) -> None:
        from django.core import checks

        from portal.startup import STARTUP_TAG

        from .keyring import check_encryption_keys

        # No process starts with master keys that do not open the stored model files (portal.startup).
        checks.register(check_encryption_keys, STARTUP_TAG)
