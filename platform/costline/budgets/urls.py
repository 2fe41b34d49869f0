"""REST API of budgets, under /api/v1/."""

from django.urls import path

from costline.budgets.api import BudgetDetail, BudgetList
from costline.budgets.api_check import BudgetCheckView

urlpatterns = [
    path("budgets/check", BudgetCheckView.as_view(), name="budgets-check"),
    path("budgets", BudgetList.as_view(), name="budgets"),
    path("budgets/<int:budget_id>", BudgetDetail.as_view(), name="budget"),
]
