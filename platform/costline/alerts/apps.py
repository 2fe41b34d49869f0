from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "costline.alerts"
    label = "alerts"
    verbose_name = "Alerts and notifications"
