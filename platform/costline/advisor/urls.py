"""REST API of the advisor, under /api/v1/."""

from django.urls import path

from costline.advisor import api

urlpatterns = [
    path("recommendations", api.RecommendationList.as_view(), name="recommendations"),
    path(
        "recommendations/<int:recommendation_id>", api.RecommendationDetail.as_view(), name="recommendation"
    ),
    path(
        "recommendations/<int:recommendation_id>/dismiss",
        api.RecommendationDismiss.as_view(),
        name="recommendation-dismiss",
    ),
    path(
        "recommendations/<int:recommendation_id>/apply",
        api.RecommendationApply.as_view(),
        name="recommendation-apply",
    ),
    path("whatif", api.WhatIf.as_view(), name="whatif"),
]
