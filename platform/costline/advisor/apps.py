from django.apps import AppConfig


class AdvisorConfig(AppConfig):
    name = "costline.advisor"
    label = "advisor"
    verbose_name = "Advisor"
