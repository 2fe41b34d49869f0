"""Every settings URL is scoped to its organisation: another organisation's slug or objects are a 404,
and a role too low for a write is a 403, before anything changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from costline.tenancy.actions import issue_api_token, issue_ingest_key
from costline.tenancy.keys import hash_secret
from costline.tenancy.models import (
    ApiToken,
    IngestKey,
    Invitation,
    Membership,
    Organization,
    Project,
    Role,
    User,
)
from costline.usage.models import PriceOverride
from tests.platform.tenancy.conftest import Member

SignIn = Callable[..., Member]

# (method, path under /o/<slug>/settings/); {project} etc. are ids of the organisation's objects.
PAGES = [
    ("get", ""),
    ("get", "general/"),
    ("get", "projects/"),
    ("get", "projects/new/"),
    ("get", "projects/{project}/"),
    ("get", "members/"),
    ("get", "ingest-keys/"),
    ("get", "api-tokens/"),
    ("get", "price-overrides/"),
    ("get", "price-overrides/new/"),
    ("get", "price-overrides/{override}/"),
]
WRITES = [
    ("post", "general/update/"),
    ("post", "projects/new/"),
    ("post", "projects/{project}/"),
    ("post", "members/{membership}/role/"),
    ("post", "members/{membership}/remove/"),
    ("post", "members/leave/"),
    ("post", "invitations/new/"),
    ("post", "invitations/{invitation}/resend/"),
    ("post", "invitations/{invitation}/revoke/"),
    ("post", "ingest-keys/new/"),
    ("post", "ingest-keys/{key}/revoke/"),
    ("post", "api-tokens/new/"),
    ("post", "api-tokens/{token}/revoke/"),
    ("post", "price-overrides/new/"),
    ("post", "price-overrides/{override}/"),
    ("post", "price-overrides/{override}/delete/"),
]
WITH_IDS = [(m, p) for m, p in PAGES + WRITES if "{" in p]
# What a form would send: enough to change something if the request were let through.
FORM = {
    "name": "Changed",
    "time_zone": "Asia/Tokyo",
    "slug": "changed",
    "role": "viewer",
    "email": "someone@example.com",
    "model_pattern": "changed*",
    "effective_from": "2025-01-01T00:00",
    "discount_percent": "50",
    "scope": "organization",
}


@dataclass
class Objects:
    org: Organization
    ids: dict[str, int]

    def path(self, template: str) -> str:
        return f"/o/{self.org.slug}/settings/" + template.format(**self.ids)


def objects_of(org: Organization) -> Objects:
    """One of each object a settings URL names, in `org`; the membership is an ordinary member's."""
    n = Organization.objects.count()
    member = Membership.objects.create(
        organization=org, user=User.objects.create_user(f"m{n}@{org.slug}.example"), role=Role.MEMBER
    )
    ids = {
        "project": Project.objects.create(organization=org, name="P", slug="p").id,
        "membership": member.id,
        "invitation": Invitation.objects.create(
            organization=org,
            email=f"invited@{org.slug}.example",
            token_hash=hash_secret(f"token of {org.slug}"),
            expires_at=timezone.now() + timedelta(days=7),
        ).id,
        "key": issue_ingest_key(org, "k").id,
        "token": issue_api_token(org, "t").id,
        "override": PriceOverride.objects.create(
            tenant=org,
            model_pattern="gpt-4o*",
            effective_from=datetime(2025, 3, 1, tzinfo=UTC),
            discount_percent=10,
        ).id,
    }
    return Objects(org, ids)


def snapshot(org: Organization) -> dict[str, object]:
    """Everything a settings write could change in `org`."""
    return {
        "org": Organization.objects.filter(id=org.id).values("name", "time_zone").get(),
        "projects": list(Project.objects.filter(organization=org).values().order_by("id")),
        "members": list(Membership.objects.filter(organization=org).values("user_id", "role").order_by("id")),
        "invitations": list(Invitation.objects.filter(organization=org).values().order_by("id")),
        "keys": list(IngestKey.objects.filter(organization=org).values().order_by("id")),
        "tokens": list(ApiToken.objects.filter(organization=org).values("id", "revoked_at").order_by("id")),
        "overrides": list(PriceOverride.objects.filter(tenant=org).values().order_by("id")),
    }


@pytest.fixture
def ours_and_theirs(sign_in: SignIn) -> tuple[Member, Objects, Objects]:
    """An owner of our organisation, our objects, and another organisation's objects."""
    owner = sign_in(Role.OWNER)
    theirs = sign_in(Role.OWNER).org
    return owner, objects_of(owner.org), objects_of(theirs)


@pytest.mark.parametrize(("method", "path"), PAGES + WRITES)
def test_another_organisations_slug_is_a_404(
    ours_and_theirs: tuple[Member, Objects, Objects], method: str, path: str
) -> None:
    owner, _, theirs = ours_and_theirs
    before = snapshot(theirs.org)

    response = getattr(owner.client, method)(theirs.path(path), FORM)

    assert response.status_code == 404
    assert snapshot(theirs.org) == before


@pytest.mark.parametrize(("method", "path"), WITH_IDS)
def test_another_organisations_object_ids_under_our_slug_are_a_404(
    ours_and_theirs: tuple[Member, Objects, Objects], method: str, path: str
) -> None:
    owner, ours, theirs = ours_and_theirs
    before = snapshot(theirs.org)

    response = getattr(owner.client, method)(Objects(ours.org, theirs.ids).path(path), FORM)

    assert response.status_code == 404
    assert snapshot(theirs.org) == before


def test_a_slug_that_does_not_exist_is_the_same_404(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)

    assert owner.client.get("/o/no-such-org/settings/general/").status_code == 404


@pytest.mark.parametrize(("method", "path"), [w for w in WRITES if w[1] != "members/leave/"])
def test_a_viewer_is_refused_every_write(sign_in: SignIn, method: str, path: str) -> None:
    viewer = sign_in(Role.VIEWER)
    ours = objects_of(viewer.org)
    before = snapshot(viewer.org)

    response = getattr(viewer.client, method)(ours.path(path), FORM)

    assert response.status_code == 403
    assert snapshot(viewer.org) == before


@pytest.mark.parametrize(
    "path", ["projects/new/", "projects/{project}/", "price-overrides/new/", "price-overrides/{override}/"]
)
def test_a_viewer_is_refused_the_edit_forms(sign_in: SignIn, path: str) -> None:
    viewer = sign_in(Role.VIEWER)

    assert viewer.client.get(objects_of(viewer.org).path(path)).status_code == 403


@pytest.mark.parametrize(("method", "path"), PAGES + WRITES)
def test_signed_out_visitors_are_sent_to_sign_in(
    sign_in: SignIn, client: Client, method: str, path: str
) -> None:
    ours = objects_of(sign_in(Role.OWNER).org)

    response = getattr(client, method)(ours.path(path), FORM)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", [p for m, p in WRITES if ("get", p) not in PAGES])
def test_writes_that_are_no_form_page_answer_get_with_405(sign_in: SignIn, path: str) -> None:
    owner = sign_in(Role.OWNER)

    assert owner.client.get(objects_of(owner.org).path(path)).status_code == 405
