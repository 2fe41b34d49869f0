from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "costline.dashboards"
    label = "dashboards"
    verbose_name = "Dashboards"
