"""Alert pages of one organisation, under /o/<slug>/alerts/ (see costline.alerts.page_views)."""

from django.urls import path

from costline.alerts import page_views

app_name = "alerts_pages"

urlpatterns = [
    path("", page_views.alert_list, name="list"),
    path("rules/new/", page_views.rule_new, name="rule_new"),
    path("rules/<int:rule_id>/", page_views.rule_edit, name="rule_edit"),
    path("incidents/<int:incident_id>/", page_views.incident_detail, name="incident"),
    path("incidents/<int:incident_id>/acknowledge/", page_views.incident_acknowledge, name="acknowledge"),
    path("incidents/<int:incident_id>/resolve/", page_views.incident_resolve, name="resolve"),
]
