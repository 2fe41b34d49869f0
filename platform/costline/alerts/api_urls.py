"""REST API of alert rules and incidents, under /api/v1/."""

from django.urls import path

from costline.alerts import api

urlpatterns = [
    path("alerts", api.AlertRuleList.as_view(), name="alerts"),
    path("alerts/<int:rule_id>", api.AlertRuleDetail.as_view(), name="alert"),
    path("incidents", api.IncidentList.as_view(), name="incidents"),
    path("incidents/<int:incident_id>", api.IncidentDetail.as_view(), name="incident"),
    path("incidents/<int:incident_id>/acknowledge", api.IncidentAcknowledge.as_view(), name="incident-ack"),
    path("incidents/<int:incident_id>/resolve", api.IncidentResolve.as_view(), name="incident-resolve"),
]
