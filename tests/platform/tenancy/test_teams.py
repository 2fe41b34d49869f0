"""Teams settings pages: everyone reads, admins create and edit (name, slug, projects, members)."""

from __future__ import annotations

from collections.abc import Callable

from costline.tenancy.models import Project, Role, Team
from tests.platform.tenancy.conftest import Member

SignIn = Callable[..., Member]


def test_an_admin_creates_a_team_with_projects_and_members(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    colleague = sign_in(Role.VIEWER, org=admin.org)
    project = Project.objects.create(organization=admin.org, name="Search", slug="search")

    response = admin.client.post(
        admin.url("settings/teams/new/"),
        {"name": "Search team", "projects": [project.id], "members": [colleague.user.id]},
    )

    assert response.status_code == 302
    team = Team.objects.get(organization=admin.org)
    assert team.slug == "search-team"
    assert list(team.projects.all()) == [project]
    assert list(team.members.all()) == [colleague.user]
    html = admin.client.get(admin.url("settings/teams/")).content.decode()
    assert 'data-team="search-team"' in html
    assert colleague.user.email in html


def test_an_admin_edits_a_team(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    team = Team.objects.create(organization=admin.org, name="Ads", slug="ads")

    response = admin.client.post(
        admin.url(f"settings/teams/{team.id}/"), {"name": "Ads & growth", "slug": "growth"}
    )

    assert response.status_code == 302
    team.refresh_from_db()
    assert (team.name, team.slug) == ("Ads & growth", "growth")


def test_a_slug_is_unique_in_the_organisation(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    Team.objects.create(organization=admin.org, name="Ads", slug="ads")

    response = admin.client.post(admin.url("settings/teams/new/"), {"name": "Ads"})

    assert response.status_code == 400
    assert "Another team of this organisation has the slug" in response.content.decode().replace(
        "&#x27;", "'"
    )


def test_only_the_organisations_projects_and_members_are_offered(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    stranger = sign_in(Role.ADMIN)
    theirs = Project.objects.create(organization=stranger.org, name="Theirs", slug="theirs")

    response = admin.client.post(
        admin.url("settings/teams/new/"),
        {"name": "T", "projects": [theirs.id], "members": [stranger.user.id]},
    )

    assert response.status_code == 400
    assert not Team.objects.filter(organization=admin.org).exists()


def test_members_read_teams_but_only_admins_change_them(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    team = Team.objects.create(organization=member.org, name="Ads", slug="ads")

    assert member.client.get(member.url("settings/teams/")).status_code == 200
    assert member.client.get(member.url("settings/teams/new/")).status_code == 403
    assert member.client.post(member.url("settings/teams/new/"), {"name": "X"}).status_code == 403
    assert member.client.post(member.url(f"settings/teams/{team.id}/"), {"name": "X"}).status_code == 403
    assert Team.objects.get(id=team.id).name == "Ads"


def test_another_organisations_team_is_not_found(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    stranger = sign_in(Role.ADMIN)
    team = Team.objects.create(organization=stranger.org, name="Theirs", slug="theirs")

    assert admin.client.get(admin.url(f"settings/teams/{team.id}/")).status_code == 404
    assert admin.client.post(admin.url(f"settings/teams/{team.id}/"), {"name": "Mine"}).status_code == 404


def test_the_settings_nav_links_to_teams(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)

    html = viewer.client.get(viewer.url("settings/general/")).content.decode()

    assert f'href="/o/{viewer.org.slug}/settings/teams/"' in html
