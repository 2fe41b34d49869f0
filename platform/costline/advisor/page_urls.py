"""Advisor pages of one organisation, under /o/<slug>/advisor/ (see costline.advisor.views)."""

from django.urls import path

from costline.advisor import views

app_name = "advisor"

urlpatterns = [
    path("", views.recommendation_list, name="list"),
    path("whatif/", views.whatif_form, name="whatif"),
    path("<int:recommendation_id>/", views.recommendation_detail, name="detail"),
    path("<int:recommendation_id>/dismiss/", views.recommendation_dismiss, name="dismiss"),
    path("<int:recommendation_id>/apply/", views.recommendation_apply, name="apply"),
]
