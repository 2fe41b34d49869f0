from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "costline.usage"
    label = "usage"
    verbose_name = "Usage"
