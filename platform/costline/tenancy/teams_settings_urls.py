"""Teams settings pages, in the "settings" namespace beside the other settings pages."""

from django.urls import path

from costline.tenancy import teams_views as views

urlpatterns = [
    path("teams/", views.teams, name="teams"),
    path("teams/new/", views.team_new, name="team_new"),
    path("teams/<int:team_id>/", views.team_edit, name="team_edit"),
]
