from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from costline.alerts import settings_urls as alerts_settings
from costline.dashboards.views import home
from costline.tenancy import gateway_keys_urls as gateway_keys_settings
from costline.tenancy import settings_urls as tenancy_settings
from costline.tenancy import teams_settings_urls as teams_settings
from costline.usage import settings_urls as usage_settings

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/v1/", include("costline.usage.urls")),
    path("api/v1/", include("costline.budgets.urls")),
    path("api/v1/", include("costline.alerts.api_urls")),
    path("api/v1/", include("costline.advisor.urls")),
    path("", home, name="home"),
    path("accounts/", include("costline.tenancy.account_urls")),
    path(
        "o/<slug:org>/settings/",
        include(
            (
                tenancy_settings.urlpatterns
                + teams_settings.urlpatterns
                + gateway_keys_settings.urlpatterns
                + usage_settings.urlpatterns
                + alerts_settings.urlpatterns,
                "settings",
            )
        ),
    ),
    path("o/<slug:org>/budgets/", include("costline.budgets.page_urls")),
    path("o/<slug:org>/alerts/", include("costline.alerts.page_urls")),
    path("o/<slug:org>/advisor/", include("costline.advisor.page_urls")),
    path("o/<slug:org>/", include("costline.dashboards.urls")),
]
