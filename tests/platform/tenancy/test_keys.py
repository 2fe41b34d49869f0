"""Ingest keys and API tokens: shown once, stored as hashes, revocable by their own tenant only."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import httpx
import pytest
from django.test import Client

from costline.tenancy.actions import (
    Issued,
    issue_api_token,
    issue_ingest_key,
    resolve_api_token,
    revoke_api_token,
    revoke_ingest_key,
)
from costline.tenancy.models import ApiToken, IngestKey, Organization
from tests.conftest import RunningCollector, TenantKeys

MakeTenant = Callable[..., TenantKeys]
CALLS = "/api/v1/calls"


def export_nothing(collector: RunningCollector, ingest_key: str) -> httpx.Response:
    """An OTLP/JSON export with no spans: enough to see whether the collector takes the key."""
    return httpx.post(
        f"{collector.http_url}/v1/traces",
        content=b'{"resourceSpans": []}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ingest_key}"},
        timeout=30,
    )


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("issue", "model", "kind_prefix"),
    [
        (issue_ingest_key, IngestKey, "clik_"),
        (issue_api_token, ApiToken, "clat_"),
    ],
)
def test_it_stores_a_secret_only_as_its_sha256_hash_and_a_display_prefix(
    db: None,
    make_tenant: MakeTenant,
    issue: Callable[[Organization, str], Issued],
    model: type[IngestKey | ApiToken],
    kind_prefix: str,
) -> None:
    org = make_tenant().org

    issued = issue(org, "deploy")

    row = model.objects.filter(id=issued.id).values().get()
    assert issued.plaintext.startswith(kind_prefix)
    assert row["secret_hash"] == hashlib.sha256(issued.plaintext.encode()).hexdigest()
    assert row["prefix"] == issued.plaintext[:12] == issued.prefix
    stored = json.dumps(row, default=str)
    assert issued.plaintext not in stored
    assert issued.plaintext[len(kind_prefix) :] not in stored


def test_it_issues_a_different_secret_every_time(db: None, make_tenant: MakeTenant) -> None:
    org = make_tenant().org

    tokens = {issue_api_token(org, f"token {n}").plaintext for n in range(20)}
    keys = {issue_ingest_key(org, f"key {n}").plaintext for n in range(20)}

    assert len(tokens) == 20
    assert len(keys) == 20


def test_it_resolves_an_api_token_to_its_organisation_and_nothing_else(
    db: None, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()

    assert resolve_api_token(tenant.api_token).organization == tenant.org
    assert resolve_api_token(tenant.api_token + "x") is None
    assert resolve_api_token(tenant.ingest_key) is None
    assert resolve_api_token("") is None


def test_it_refuses_an_api_token_once_revoked(db: None, make_tenant: MakeTenant, client: Client) -> None:
    tenant = make_tenant()
    token = ApiToken.objects.get(organization=tenant.org)
    assert client.get(CALLS, headers=tenant.api_auth).status_code == 200

    revoked = revoke_api_token(tenant.org, token.id)

    assert revoked is True
    assert client.get(CALLS, headers=tenant.api_auth).status_code == 401
    assert ApiToken.objects.get(id=token.id).revoked_at is not None
    assert revoke_api_token(tenant.org, token.id) is False


def test_it_lets_no_tenant_revoke_another_tenants_api_token(
    db: None, make_tenant: MakeTenant, client: Client
) -> None:
    ours, theirs = make_tenant(), make_tenant()
    their_token = ApiToken.objects.get(organization=theirs.org)

    revoked = revoke_api_token(ours.org, their_token.id)

    assert revoked is False
    assert client.get(CALLS, headers=theirs.api_auth).status_code == 200


def test_it_records_when_an_api_token_was_last_used(
    db: None, make_tenant: MakeTenant, client: Client
) -> None:
    tenant = make_tenant()
    assert ApiToken.objects.get(organization=tenant.org).last_used_at is None

    client.get(CALLS, headers=tenant.api_auth)

    assert ApiToken.objects.get(organization=tenant.org).last_used_at is not None


def test_the_collector_refuses_an_ingest_key_once_revoked(
    transactional_db: None, make_tenant: MakeTenant, collector: RunningCollector
) -> None:
    tenant = make_tenant()
    key = IngestKey.objects.get(organization=tenant.org)
    assert export_nothing(collector, tenant.ingest_key).status_code == 200

    revoked = revoke_ingest_key(tenant.org, key.id)

    assert revoked is True
    assert export_nothing(collector, tenant.ingest_key).status_code == 401
    assert revoke_ingest_key(tenant.org, key.id) is False


def test_it_lets_no_tenant_revoke_another_tenants_ingest_key(
    transactional_db: None, make_tenant: MakeTenant, collector: RunningCollector
) -> None:
    ours, theirs = make_tenant(), make_tenant()
    their_key = IngestKey.objects.get(organization=theirs.org)

    revoked = revoke_ingest_key(ours.org, their_key.id)

    assert revoked is False
    assert export_nothing(collector, theirs.ingest_key).status_code == 200


def test_a_personal_api_token_stops_working_when_its_owner_leaves_the_organisation(
    db: None, make_tenant: MakeTenant, client: Client
) -> None:
    from costline.tenancy.models import Membership, Role, User

    tenant = make_tenant()
    person = User.objects.create_user("ada@example.com", "a long passphrase")
    membership = Membership.objects.create(organization=tenant.org, user=person, role=Role.MEMBER)
    personal = issue_api_token(tenant.org, "ada's token", user=person)
    assert client.get(CALLS, headers=bearer(personal.plaintext)).status_code == 200

    membership.delete()

    response = client.get(CALLS, headers=bearer(personal.plaintext))
    assert response.status_code == 401
    assert "no longer a member" in response.json()["detail"]
