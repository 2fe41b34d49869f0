from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "costline.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"
