"""Settings pages of the usage app, in the "settings" namespace beside the tenancy app's."""

from django.urls import path

from costline.usage import deployment_views
from costline.usage import settings_views as views

urlpatterns = [
    path("price-overrides/", views.price_overrides, name="price_overrides"),
    path("price-overrides/new/", views.price_override_new, name="price_override_new"),
    path("price-overrides/<int:override_id>/", views.price_override_edit, name="price_override_edit"),
    path(
        "price-overrides/<int:override_id>/delete/", views.price_override_delete, name="price_override_delete"
    ),
    path("deployments/", deployment_views.deployments, name="deployments"),
    path("deployments/new/", deployment_views.deployment_new, name="deployment_new"),
    path("deployments/<int:deployment_id>/", deployment_views.deployment_edit, name="deployment_edit"),
    path(
        "deployments/<int:deployment_id>/delete/",
        deployment_views.deployment_delete,
        name="deployment_delete",
    ),
]
