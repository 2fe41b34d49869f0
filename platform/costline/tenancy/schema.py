"""How the OpenAPI schema describes Costline's API token authentication (drf-spectacular).

Imported by TenancyConfig.ready(): an extension is found by being defined, and without this one the
schema leaves the endpoints' authentication out (and the generator warns).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from costline.tenancy.keys import API_TOKEN_PREFIX, INGEST_KEY_PREFIX


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "costline.tenancy.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                f"An organisation's API token (it starts with `{API_TOKEN_PREFIX}`), sent as "
                "`Authorization: Bearer <api token>`. Create one in Settings → API tokens or with "
                f"`python manage.py create_tenant`. Ingest keys (`{INGEST_KEY_PREFIX}…`) are for the "
                "collector only."
            ),
        }
