"""`python manage.py create_tenant NAME --json`: an organisation and its first keys, for scripts."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from costline.tenancy.models import Organization
from tests.conftest import RunningCollector
from tests.platform.tenancy.test_keys import export_nothing
from tests.platform.usage.factories import make_call


def create_tenant(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("create_tenant", *args, "--json", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, f"expected one line of JSON, got {out.getvalue()!r}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_it_prints_one_json_object_with_the_tenant_and_its_secrets(db: None) -> None:
    result = create_tenant("Kestrel Analytics")

    org = Organization.objects.get(slug="kestrel-analytics")
    assert result == {
        "tenant": {"id": org.id, "name": "Kestrel Analytics", "slug": "kestrel-analytics"},
        "ingest_key": result["ingest_key"],
        "api_token": result["api_token"],
    }
    assert result["ingest_key"].startswith("clik_")
    assert result["api_token"].startswith("clat_")


def test_its_api_token_lists_the_new_tenants_calls(db: None, client: Client) -> None:
    result = create_tenant("Acme Corp")
    call = make_call(Organization.objects.get(id=result["tenant"]["id"]))

    response = client.get("/api/v1/calls", headers={"Authorization": f"Bearer {result['api_token']}"})

    assert response.status_code == 200
    assert [row["span_id"] for row in response.json()["results"]] == [call.span_id]


def test_its_ingest_key_is_accepted_by_the_collector(
    transactional_db: None, collector: RunningCollector
) -> None:
    result = create_tenant("Acme Corp")

    accepted = export_nothing(collector, result["ingest_key"])
    refused = export_nothing(collector, result["ingest_key"] + "x")

    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 401


def test_it_gives_two_tenants_with_the_same_name_distinct_slugs(db: None) -> None:
    first = create_tenant("Twin Peaks Labs")
    second = create_tenant("Twin Peaks Labs")

    assert (first["tenant"]["slug"], second["tenant"]["slug"]) == ("twin-peaks-labs", "twin-peaks-labs-2")
    assert first["tenant"]["id"] != second["tenant"]["id"]
    assert first["api_token"] != second["api_token"]
    assert first["ingest_key"] != second["ingest_key"]


def test_it_keeps_the_time_zone_it_is_given(db: None) -> None:
    result = create_tenant("Acme", "--time-zone", "Europe/Paris")

    assert Organization.objects.get(id=result["tenant"]["id"]).time_zone == "Europe/Paris"


@pytest.mark.parametrize("name", ["!!!", "数据"])
def test_it_gives_a_name_without_latin_letters_a_usable_slug(db: None, name: str) -> None:
    result = create_tenant(name)

    assert result["tenant"]["name"] == name
    assert re.fullmatch(r"org(-\d+)?", result["tenant"]["slug"])
