from django.apps import AppConfig


class CostlineConfig(AppConfig):
    """The project package as an app, so that its management commands (`run`) are found."""

    name = "costline"
    label = "costline"
    verbose_name = "Costline"
