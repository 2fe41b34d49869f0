"""Settings pages of notification channels, in the "settings" namespace beside the tenancy app's."""

from django.urls import path

from costline.alerts import views

urlpatterns = [
    path("channels/", views.channels, name="channels"),
    path("channels/new/", views.channel_new, name="channel_new"),
    path("channels/<int:channel_id>/", views.channel_detail, name="channel"),
    path("channels/<int:channel_id>/edit/", views.channel_edit, name="channel_edit"),
    path("channels/<int:channel_id>/delete/", views.channel_delete, name="channel_delete"),
    path("channels/<int:channel_id>/test/", views.channel_test, name="channel_test"),
    path(
        "channels/<int:channel_id>/rotate-secret/",
        views.channel_rotate_secret,
        name="channel_rotate_secret",
    ),
]
