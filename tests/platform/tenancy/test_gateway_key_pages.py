"""Settings → Gateway keys: admins issue a key (shown once) that maps its calls to a project and a team,
and revoke it; nobody else sees the page, and another organisation's key is out of reach."""

from __future__ import annotations

from collections.abc import Callable

from costline.tenancy.actions import create_organization, issue_gateway_key
from costline.tenancy.keys import hash_secret
from costline.tenancy.models import GatewayKey, Project, Role, Team
from tests.platform.tenancy.conftest import Member
from tests.platform.tenancy.test_secret_pages import create

SignIn = Callable[..., Member]


def test_an_admin_issues_a_gateway_key_for_a_project_and_team(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    project = Project.objects.create(organization=admin.org, name="Support", slug="support")
    team = Team.objects.create(organization=admin.org, name="Care", slug="care")

    plaintext, html = create(
        admin,
        "gateway-keys",
        name="support-bot",
        project=str(project.id),
        team=str(team.id),
        cache_enabled="",
    )

    key = GatewayKey.objects.get(organization=admin.org)
    assert plaintext.startswith("clgk_")
    assert key.secret_hash == hash_secret(plaintext)
    assert (key.project, key.team, key.cache_enabled) == (project, team, False)
    assert f'data-key="{key.prefix}"' in html
    assert plaintext not in admin.client.get(admin.url("settings/gateway-keys/")).content.decode()


def test_an_admin_revokes_a_gateway_key(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    issued = issue_gateway_key(admin.org, "bot")

    response = admin.client.post(admin.url(f"settings/gateway-keys/{issued.id}/revoke/"), follow=True)

    assert "the gateway refuses it" in response.content.decode()
    assert not GatewayKey.objects.get(id=issued.id).is_active


def test_members_do_not_manage_gateway_keys(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    assert member.client.get(member.url("settings/gateway-keys/")).status_code == 403
    assert member.client.post(member.url("settings/gateway-keys/new/"), {"name": "x"}).status_code == 403


def test_another_organisations_key_cannot_be_revoked(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    theirs = issue_gateway_key(create_organization("Elsewhere"), "theirs")

    response = admin.client.post(admin.url(f"settings/gateway-keys/{theirs.id}/revoke/"))

    assert response.status_code == 404
    assert GatewayKey.objects.get(id=theirs.id).is_active
