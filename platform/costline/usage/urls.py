from django.urls import path

from costline.usage.api import CallList

urlpatterns = [
    path("calls", CallList.as_view(), name="calls"),
]
