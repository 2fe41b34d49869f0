"""Budget pages of one organisation, under /o/<slug>/budgets/ (see costline.budgets.views)."""

from django.urls import path

from costline.budgets import views

app_name = "budgets"

urlpatterns = [
    path("", views.budget_list, name="list"),
    path("new/", views.budget_new, name="new"),
    path("<int:budget_id>/", views.budget_detail, name="detail"),
    path("<int:budget_id>/edit/", views.budget_edit, name="edit"),
    path("<int:budget_id>/pause/", views.budget_pause, name="pause"),
    path("<int:budget_id>/resume/", views.budget_resume, name="resume"),
    path("<int:budget_id>/delete/", views.budget_delete, name="delete"),
]
