"""Members and roles: who may change whom, the last owner stays, anyone may leave, switching organisations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.test import Client

from costline.tenancy.actions import issue_api_token
from costline.tenancy.models import Membership, Role
from tests.platform.tenancy.conftest import Member
from tests.platform.usage.factories import make_call

SignIn = Callable[..., Member]


def role_of(member: Member) -> str | None:
    return (
        Membership.objects.filter(organization=member.org, user=member.user)
        .values_list("role", flat=True)
        .first()
    )


def membership_id(member: Member) -> int:
    return Membership.objects.get(organization=member.org, user=member.user).id


def set_role(actor: Member, target: Member, role: Role) -> Any:
    return actor.client.post(actor.url(f"settings/members/{membership_id(target)}/role/"), {"role": role})


def test_the_members_page_lists_everyone_with_their_role(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    viewer = sign_in(Role.VIEWER, org=owner.org)

    html = viewer.client.get(viewer.url("settings/members/")).content.decode()

    assert f'data-member="{owner.user.email}"' in html
    assert f'data-member="{viewer.user.email}"' in html
    assert "Owner" in html
    assert 'data-action="change-role"' not in html  # a viewer changes nothing
    assert 'data-action="leave"' in html


def test_an_admin_changes_a_members_role(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    member = sign_in(Role.MEMBER, org=admin.org)

    response = set_role(admin, member, Role.VIEWER)

    assert response.status_code == 302
    assert role_of(member) == Role.VIEWER


def test_an_admin_cannot_promote_anyone_to_owner(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    member = sign_in(Role.MEMBER, org=admin.org)

    response = set_role(admin, member, Role.OWNER)
    themselves = set_role(admin, admin, Role.OWNER)

    assert response.status_code == themselves.status_code == 403
    assert role_of(member) == Role.MEMBER
    assert role_of(admin) == Role.ADMIN


def test_an_admin_cannot_demote_or_remove_an_owner(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    admin = sign_in(Role.ADMIN, org=owner.org)

    demoted = set_role(admin, owner, Role.VIEWER)
    removed = admin.client.post(admin.url(f"settings/members/{membership_id(owner)}/remove/"))

    assert demoted.status_code == removed.status_code == 403
    assert role_of(owner) == Role.OWNER


def test_an_owner_makes_another_owner(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    admin = sign_in(Role.ADMIN, org=owner.org)

    set_role(owner, admin, Role.OWNER)

    assert role_of(admin) == Role.OWNER


def test_the_last_owner_can_be_neither_demoted_nor_removed_and_cannot_leave(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)

    demoted = owner.client.post(
        owner.url(f"settings/members/{membership_id(owner)}/role/"), {"role": "admin"}
    )
    left = owner.client.post(owner.url("settings/members/leave/"), follow=True)

    assert demoted.status_code == 302
    assert role_of(owner) == Role.OWNER
    assert "is the only owner" in left.content.decode()
    assert "Make another member an owner first" in left.content.decode()


def test_an_owner_may_step_down_once_there_is_another(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    other = sign_in(Role.OWNER, org=owner.org)

    set_role(owner, owner, Role.MEMBER)

    assert role_of(owner) == Role.MEMBER
    assert role_of(other) == Role.OWNER


def test_removing_a_member_ends_their_access_and_their_personal_tokens(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    member = sign_in(Role.MEMBER, org=admin.org)
    token = issue_api_token(admin.org, "script", user=member.user).plaintext

    response = admin.client.post(admin.url(f"settings/members/{membership_id(member)}/remove/"))

    assert response.status_code == 302
    assert role_of(member) is None
    assert member.client.get(member.url("settings/general/")).status_code == 404
    assert Client().get("/api/v1/calls", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_viewer_may_leave(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    viewer = sign_in(Role.VIEWER, org=owner.org)

    response = viewer.client.post(viewer.url("settings/members/leave/"))

    assert response["Location"] == "/"
    assert role_of(viewer) is None
    assert viewer.client.get("/").status_code == 200  # the "no organisation yet" page


def test_a_viewer_changes_no_roles(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    viewer = sign_in(Role.VIEWER, org=owner.org)

    response = set_role(viewer, viewer, Role.ADMIN)

    assert response.status_code == 403
    assert role_of(viewer) == Role.VIEWER


def test_a_person_in_two_organisations_switches_between_them(sign_in: SignIn) -> None:
    first = sign_in(Role.OWNER)
    second_org = sign_in(Role.OWNER).org
    Membership.objects.create(organization=second_org, user=first.user, role=Role.VIEWER)
    make_call(second_org, service="only-in-the-second")
    client = first.client

    page = client.get(first.url("settings/general/")).content.decode()
    switched = client.get(f"/o/{second_org.slug}/settings/general/")
    home = client.get("/")
    api = client.get("/api/v1/calls").json()

    assert f'href="/o/{second_org.slug}/"' in page  # the switcher offers the other organisation
    assert switched.status_code == 200
    assert "You are <strong>viewer</strong>" in switched.content.decode()
    assert home["Location"] == f"/o/{second_org.slug}/"
    assert [row["service"] for row in api["results"]] == ["only-in-the-second"]
    assert client.get(first.url("settings/general/")).status_code == 200
    assert client.get("/")["Location"] == first.url()


def test_a_refusal_says_which_role_is_needed(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)

    response = viewer.client.post(viewer.url("settings/projects/new/"), {"name": "Chat"})

    assert response.status_code == 403
    assert "This needs the admin role" in response.content.decode()
    assert "you are viewer" in response.content.decode()
