from django.urls import path

from costline.usage.api import CallList, UsageView

urlpatterns = [
    path("calls", CallList.as_view(), name="calls"),
    path("usage", UsageView.as_view(), name="usage"),
]
