"""Pages of one organisation, under /o/<slug>/ (see costline.tenancy.web.org_view)."""

from django.urls import path

from costline.dashboards import call_pages, exports, views

app_name = "dashboards"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("explore/", views.explore, name="explore"),
    path("models/", views.models_page, name="models"),
    path("calls/", call_pages.call_list, name="calls"),
    path("calls/export.csv", exports.calls_csv, name="calls_csv"),
    path("calls/<str:trace_id>/<str:span_id>/", call_pages.call_detail, name="call"),
    path("exports/focus.csv", exports.focus_csv, name="focus_csv"),
]
