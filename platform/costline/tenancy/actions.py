"""Verbs of the tenancy domain: create organisations, issue, resolve and revoke secrets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from costline.tenancy.keys import (
    API_TOKEN_PREFIX,
    GATEWAY_KEY_PREFIX,
    INGEST_KEY_PREFIX,
    display_prefix,
    hash_secret,
    new_secret,
)
from costline.tenancy.models import (
    ApiToken,
    GatewayKey,
    IngestKey,
    Membership,
    Organization,
    Project,
    Role,
    Team,
    User,
)


@dataclass(frozen=True)
class Issued:
    """A secret just issued: `plaintext` is shown once and never stored."""

    id: int
    prefix: str
    plaintext: str


def unique_org_slug(name: str) -> str:
    base = slugify(name)[:90] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def create_organization(name: str, *, owner: User | None = None, time_zone: str = "UTC") -> Organization:
    org = Organization.objects.create(name=name, slug=unique_org_slug(name), time_zone=time_zone)
    if owner is not None:
        Membership.objects.create(organization=org, user=owner, role=Role.OWNER)
    return org


def _issue(
    model: type[IngestKey] | type[GatewayKey] | type[ApiToken], kind_prefix: str, **fields: Any
) -> Issued:
    """A new secret of `model`: stored as its hash and display prefix, returned in plain text once."""
    plaintext = new_secret(kind_prefix)
    row = model.objects.create(prefix=display_prefix(plaintext), secret_hash=hash_secret(plaintext), **fields)
    return Issued(id=row.id, prefix=row.prefix, plaintext=plaintext)


def issue_ingest_key(
    org: Organization, name: str, *, project: Project | None = None, created_by: User | None = None
) -> Issued:
    return _issue(
        IngestKey, INGEST_KEY_PREFIX, organization=org, name=name, project=project, created_by=created_by
    )


def issue_gateway_key(
    org: Organization,
    name: str,
    *,
    project: Project | None = None,
    team: Team | None = None,
    cache_enabled: bool = True,
    created_by: User | None = None,
) -> Issued:
    return _issue(
        GatewayKey,
        GATEWAY_KEY_PREFIX,
        organization=org,
        name=name,
        project=project,
        team=team,
        cache_enabled=cache_enabled,
        created_by=created_by,
    )


def issue_api_token(org: Organization, name: str, *, user: User | None = None) -> Issued:
    return _issue(ApiToken, API_TOKEN_PREFIX, organization=org, name=name, user=user)


def resolve_api_token(plaintext: str) -> ApiToken | None:
    if not plaintext.startswith(API_TOKEN_PREFIX):
        return None
    return (
        ApiToken.objects.active()
        .select_related("organization", "user")
        .filter(secret_hash=hash_secret(plaintext))
        .first()
    )


def revoke_ingest_key(org: Organization, key_id: int) -> bool:
    """Revoke one of `org`'s ingest keys; False when it is not theirs or already revoked."""
    return bool(
        IngestKey.objects.filter(organization=org, id=key_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )


def revoke_api_token(org: Organization, token_id: int) -> bool:
    return bool(
        ApiToken.objects.filter(organization=org, id=token_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )


def revoke_gateway_key(org: Organization, key_id: int) -> bool:
    """Revoke one of `org`'s gateway keys; the gateway refuses it within its key cache time (10 s)."""
    return bool(
        GatewayKey.objects.filter(organization=org, id=key_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )
