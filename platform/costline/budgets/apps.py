from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "costline.budgets"
    label = "budgets"
    verbose_name = "Budgets"
