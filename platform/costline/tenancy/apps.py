from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "costline.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        # Registers the API token scheme with drf-spectacular (an extension registers by being defined).
        from costline.tenancy import schema  # noqa: F401
