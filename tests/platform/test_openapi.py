"""The OpenAPI schema, the docs pages (served offline), and GET /api/v1/usage's refusals over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

from costline.tenancy.models import User
from costline.usage.metrics import DIMENSIONS
from tests.conftest import TenantKeys

SCHEMA_URL = "/api/v1/schema/"
USAGE_URL = "/api/v1/usage"
MakeTenant = Callable[..., TenantKeys]


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant("Acme")


def schema(client: Client, **headers: str) -> Any:
    response = client.get(SCHEMA_URL, {"format": "json"}, headers=headers)
    assert response.status_code == 200, response.content
    return response.json()


def assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


# --- the schema ----------------------------------------------------------------------------------


def test_it_generates_a_valid_schema_without_warnings(tmp_path: Path) -> None:
    # --fail-on-warn: an endpoint the generator cannot describe fails here, not in a client's build.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))

    assert "/api/v1/usage:" in (tmp_path / "schema.yml").read_text()


def test_it_serves_the_schema_without_a_token(client: Client) -> None:
    paths = schema(client)["paths"]

    assert {"/api/v1/calls", "/api/v1/usage"} <= set(paths)


def test_it_serves_the_schema_even_with_a_stale_token(client: Client) -> None:
    paths = schema(client, Authorization="Bearer clat_revoked-long-ago")["paths"]

    assert "/api/v1/usage" in paths


def test_it_serves_yaml_by_default(client: Client) -> None:
    response = client.get(SCHEMA_URL)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert b"/api/v1/usage:" in response.content


def test_it_describes_the_api_token_as_a_bearer_scheme(client: Client) -> None:
    document = schema(client)

    scheme = document["components"]["securitySchemes"]["apiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "clat_" in scheme["description"]
    for path in ("/api/v1/calls", "/api/v1/usage"):
        assert {"apiToken": []} in document["paths"][path]["get"]["security"]


def test_it_documents_every_usage_parameter_and_answer(client: Client) -> None:
    operation = schema(client)["paths"]["/api/v1/usage"]["get"]

    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == {"from", "to", "interval", "group_by", "metrics", "tz", *DIMENSIONS}
    assert all(parameter.get("description") for parameter in parameters.values())
    assert set(operation["responses"]) == {"200", "400", "401", "403"}


def test_it_documents_money_as_decimal_strings(client: Client) -> None:
    components = schema(client)["components"]["schemas"]

    cost = components["UsagePoint"]["properties"]["cost_usd"]
    assert (cost["type"], cost["format"]) == ("string", "decimal")
    assert components["UsagePoint"]["required"] == ["t"]


# --- the docs pages ------------------------------------------------------------------------------


def test_it_serves_swagger_ui_from_local_static_files(client: Client) -> None:
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "http://" not in html
    assert "https://" not in html
    assert SCHEMA_URL in html
    referenced = assets(html)
    assert referenced, "the page loads no Swagger UI"
    for url in referenced:
        assert url.startswith("/static/drf_spectacular_sidecar/"), url
        assert finders.find(url.removeprefix("/static/")), f"{url} is not a static file of the app"


def test_it_serves_redoc_from_a_local_static_file(client: Client) -> None:
    response = client.get("/api/v1/redoc/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "http://" not in html, "the page loads something from another site"
    assert "https://" not in html, "the page loads something from another site"
    scripts = re.findall(r'<script src="([^"]+)"', response.content.decode())
    assert scripts == ["/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"]
    assert finders.find(scripts[0].removeprefix("/static/"))


# --- GET /api/v1/usage: who may ask, and refusals before any query runs --------------------------


def test_usage_requires_an_api_token(client: Client, tenant: TenantKeys) -> None:
    response = client.get(USAGE_URL)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="costline"'


def test_usage_refuses_an_ingest_key(client: Client, tenant: TenantKeys) -> None:
    response = client.get(USAGE_URL, headers=tenant.auth)

    assert response.status_code == 401
    assert "Unknown or revoked API token" in response.json()["detail"]


def test_usage_forbids_a_signed_in_user_who_belongs_to_no_organisation(client: Client, db: None) -> None:
    client.force_login(User.objects.create_user("drifter@example.com", "correct horse battery staple"))

    response = client.get(USAGE_URL)

    assert response.status_code == 403
    assert "not a member of any organisation" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"colour": "blue"}, "Unknown query parameter(s): colour. Accepted: from, to, interval,"),
        ({"metrics": "cost"}, "metrics: unknown metric 'cost'; use one of: requests,"),
        ({"group_by": "model,feature,user,service"}, "group_by: at most 3 dimensions, got 4"),
        ({"group_by": ["model", "model"]}, "group_by: 'model' is given 2 times"),
        ({"tz": "Mars/Olympus"}, "tz: unknown time zone 'Mars/Olympus'"),
        ({"interval": "week"}, "interval: unknown interval 'week'"),
        ({"from": "2024-01-01", "to": "2025-06-01"}, "at most 400 days can be asked at once"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "must be earlier than to"),
        ({"from": "last tuesday"}, "from must be an ISO 8601 date-time"),
    ],
)
def test_usage_answers_a_bad_query_with_400_and_what_to_fix(
    client: Client, tenant: TenantKeys, params: dict[str, Any], says: str
) -> None:
    response = client.get(USAGE_URL, params, headers=tenant.api_auth)

    assert response.status_code == 400
    assert set(response.json()) == {"detail"}
    assert says in response.json()["detail"]


def test_usage_reads_a_plus_offset_sent_unencoded(client: Client, tenant: TenantKeys) -> None:
    # The `+` of "+02:00" arrives as a space; the range is still read (and refused here for its order).
    response = client.get(
        f"{USAGE_URL}?from=2025-03-01T12:00:00+02:00&to=2025-03-01T09:00:00Z", headers=tenant.api_auth
    )

    assert response.status_code == 400
    assert "from (2025-03-01T12:00:00+02:00) must be earlier than to" in response.json()["detail"]
