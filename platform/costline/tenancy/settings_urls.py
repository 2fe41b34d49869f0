"""Settings of one organisation: /o/<slug>/settings/. Every write is a POST to a URL of its own.

The project's URLconf puts these and the usage app's settings pages in one namespace, "settings".
"""

from django.urls import path

from costline.tenancy import views

urlpatterns = [
    path("", views.settings_index, name="index"),
    path("general/", views.general, name="general"),
    path("general/update/", views.general_update, name="general_update"),
    path("projects/", views.projects, name="projects"),
    path("projects/new/", views.project_new, name="project_new"),
    path("projects/<int:project_id>/", views.project_edit, name="project_edit"),
    path("members/", views.members, name="members"),
    path("members/leave/", views.leave, name="leave"),
    path("members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("invitations/new/", views.invitation_new, name="invitation_new"),
    path("invitations/<int:invitation_id>/resend/", views.invitation_resend, name="invitation_resend"),
    path("invitations/<int:invitation_id>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("ingest-keys/", views.ingest_keys, name="ingest_keys"),
    path("ingest-keys/new/", views.ingest_key_new, name="ingest_key_new"),
    path("ingest-keys/<int:key_id>/revoke/", views.ingest_key_revoke, name="ingest_key_revoke"),
    path("api-tokens/", views.api_tokens, name="api_tokens"),
    path("api-tokens/new/", views.api_token_new, name="api_token_new"),
    path("api-tokens/<int:token_id>/revoke/", views.api_token_revoke, name="api_token_revoke"),
]
