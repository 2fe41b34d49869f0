"""Gateway keys settings pages, in the "settings" namespace beside the other settings pages."""

from django.urls import path

from costline.tenancy import gateway_key_views as views

urlpatterns = [
    path("gateway-keys/", views.gateway_keys, name="gateway_keys"),
    path("gateway-keys/new/", views.gateway_key_new, name="gateway_key_new"),
    path("gateway-keys/<int:key_id>/revoke/", views.gateway_key_revoke, name="gateway_key_revoke"),
]
