"""Settings → Ingest keys and API tokens: a new secret is shown once, works, and stops when revoked."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.contrib.sessions.models import Session
from django.test import Client

from costline.tenancy.models import ApiToken, IngestKey, Project, Role
from tests.conftest import RunningCollector
from tests.platform.tenancy.conftest import Member
from tests.platform.tenancy.test_keys import export_nothing

SignIn = Callable[..., Member]
SECRET = re.compile(r'<code id="new-secret"[^>]*>([^<]+)</code>')


def create(member: Member, page: str, **fields: str) -> tuple[str, str]:
    """Submit the page's "new" form and follow the redirect: (the secret shown, the page's HTML)."""
    response = member.client.post(member.url(f"settings/{page}/new/"), fields, follow=True)
    assert response.status_code == 200, response.content.decode()
    assert response.redirect_chain[-1][0] == member.url(f"settings/{page}/")
    html = response.content.decode()
    match = SECRET.search(html)
    assert match, "the new secret is not on the page"
    return match.group(1), html


def test_a_new_ingest_key_is_shown_once_and_never_stored(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    plaintext, html = create(admin, "ingest-keys", name="chat-api production")
    reloaded = admin.client.get(admin.url("settings/ingest-keys/")).content.decode()

    key = IngestKey.objects.get(organization=admin.org)
    assert plaintext.startswith("clik_")
    assert f'data-key="{key.prefix}"' in html
    assert 'id="new-secret"' not in reloaded
    assert plaintext not in reloaded
    assert plaintext not in str(IngestKey.objects.filter(id=key.id).values().get())
    assert not any(plaintext in str(s.get_decoded()) for s in Session.objects.all())
    assert key.created_by == admin.user


def test_the_secret_never_reaches_the_session_table_even_between_the_post_and_the_page(
    sign_in: SignIn,
) -> None:
    admin = sign_in(Role.ADMIN)

    admin.client.post(admin.url("settings/ingest-keys/new/"), {"name": "deploy"})  # not followed yet
    stored = [str(s.get_decoded()) + s.session_data for s in Session.objects.all()]
    plaintext = SECRET.search(admin.client.get(admin.url("settings/ingest-keys/")).content.decode())

    assert plaintext is not None
    assert not any(plaintext.group(1) in row for row in stored)


def test_the_secret_is_not_shown_to_another_browser_of_the_same_person(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    other_browser = Client()
    other_browser.force_login(admin.user)

    admin.client.post(admin.url("settings/ingest-keys/new/"), {"name": "deploy"})
    html = other_browser.get(admin.url("settings/ingest-keys/")).content.decode()

    assert 'id="new-secret"' not in html


def test_an_ingest_key_can_pin_its_calls_to_a_project_of_the_organisation(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    project = Project.objects.create(organization=admin.org, name="Chat", slug="chat")
    theirs = Project.objects.create(organization=sign_in(Role.ADMIN).org, name="Theirs", slug="theirs")

    create(admin, "ingest-keys", name="chat", project=str(project.id))
    refused = admin.client.post(
        admin.url("settings/ingest-keys/new/"), {"name": "x", "project": str(theirs.id)}
    )

    assert IngestKey.objects.get(organization=admin.org).project == project
    assert refused.status_code == 400
    assert "Select a valid choice" in refused.content.decode()


def test_the_collector_takes_a_key_made_on_the_page_until_it_is_revoked_there(
    transactional_db: None, sign_in: SignIn, collector: RunningCollector
) -> None:
    admin = sign_in(Role.ADMIN)
    plaintext, _ = create(admin, "ingest-keys", name="chat-api")
    key = IngestKey.objects.get(organization=admin.org)
    accepted = export_nothing(collector, plaintext)

    revoked = admin.client.post(admin.url(f"settings/ingest-keys/{key.id}/revoke/"), follow=True)

    assert accepted.status_code == 200
    assert export_nothing(collector, plaintext).status_code == 401
    html = revoked.content.decode()
    row = html[html.index(f'data-key="{key.prefix}"') :]
    assert "Revoked" in row[: row.index("</tr>")]
    assert 'data-action="revoke"' not in row[: row.index("</tr>")]


def test_a_member_makes_a_personal_api_token_that_works_until_revoked(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)

    plaintext, html = create(member, "api-tokens", name="notebook")
    token = ApiToken.objects.get(organization=member.org)
    works = Client().get("/api/v1/calls", headers={"Authorization": f"Bearer {plaintext}"})
    member.client.post(member.url(f"settings/api-tokens/{token.id}/revoke/"))
    refused = Client().get("/api/v1/calls", headers={"Authorization": f"Bearer {plaintext}"})

    assert plaintext.startswith("clat_")
    assert token.user == member.user
    assert 'id="api-tokens"' in html
    assert works.status_code == 200
    assert refused.status_code == 401
    assert plaintext not in member.client.get(member.url("settings/api-tokens/")).content.decode()


def test_an_admin_makes_an_organisation_token(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    plaintext, _ = create(admin, "api-tokens", name="finance export", scope="organization")

    token = ApiToken.objects.get(organization=admin.org)
    assert token.user is None
    assert Client().get("/api/v1/calls", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200


def test_a_member_makes_no_organisation_token_and_cannot_revoke_one(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    member = sign_in(Role.MEMBER, org=admin.org)
    create(admin, "api-tokens", name="finance export", scope="organization")
    org_token = ApiToken.objects.get(organization=admin.org)

    made = member.client.post(member.url("settings/api-tokens/new/"), {"name": "x", "scope": "organization"})
    revoked = member.client.post(member.url(f"settings/api-tokens/{org_token.id}/revoke/"))
    listed = member.client.get(member.url("settings/api-tokens/")).content.decode()

    assert made.status_code == revoked.status_code == 403
    assert ApiToken.objects.filter(organization=admin.org).count() == 1
    assert ApiToken.objects.get(id=org_token.id).revoked_at is None
    assert org_token.prefix not in listed


def test_nobody_sees_or_revokes_someone_elses_personal_token(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    member = sign_in(Role.MEMBER, org=owner.org)
    create(member, "api-tokens", name="mine")
    token = ApiToken.objects.get(organization=owner.org)

    listed = owner.client.get(owner.url("settings/api-tokens/")).content.decode()
    revoked = owner.client.post(owner.url(f"settings/api-tokens/{token.id}/revoke/"))

    assert token.prefix not in listed
    assert revoked.status_code == 404
    assert ApiToken.objects.get(id=token.id).revoked_at is None


def test_a_viewer_neither_sees_nor_makes_keys_or_tokens(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)

    pages = [
        viewer.client.get(viewer.url(f"settings/{p}/")).status_code for p in ("ingest-keys", "api-tokens")
    ]
    made = [
        viewer.client.post(viewer.url(f"settings/{p}/new/"), {"name": "x"}).status_code
        for p in ("ingest-keys", "api-tokens")
    ]

    assert pages == made == [403, 403]
    assert not IngestKey.objects.filter(organization=viewer.org).exists()
    assert not ApiToken.objects.filter(organization=viewer.org).exists()


def test_a_member_does_not_manage_ingest_keys(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)

    assert member.client.get(member.url("settings/ingest-keys/")).status_code == 403
    assert member.client.post(member.url("settings/ingest-keys/new/"), {"name": "x"}).status_code == 403


def test_a_name_is_required_and_the_page_says_so(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(admin.url("settings/ingest-keys/new/"), {"name": ""})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert 'id="new-secret"' not in response.content.decode()
