from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"

    def ready(self) -> None:
        from django.core import checks

        from portal.startup import STARTUP_TAG

        from .keyring import check_encryption_keys

        # No process starts with master keys that do not open the stored model files (portal.startup).
        checks.register(check_encryption_keys, STARTUP_TAG)

        from portal.views import NOT_FOUND_CONTEXT

        from .views import near_models

        # A mistyped model page's 404 says "did you mean" the models of a close name.
        NOT_FOUND_CONTEXT.append(lambda request: {"near_models": near_models(request)})
