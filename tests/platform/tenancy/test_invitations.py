"""Invitations: an admin invites an email with a role; the link makes its owner a member, once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.core import mail
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from costline.tenancy.invitations import TOKEN_PREFIX
from costline.tenancy.keys import hash_secret
from costline.tenancy.models import Invitation, Membership, Role, User
from tests.platform.tenancy.conftest import PASSWORD, Member, link_in_last_email

SignIn = Callable[..., Member]
NEW_PASSWORD = "tangerine submarine orchestra"


def invite(admin: Member, email: str, role: Role = Role.MEMBER) -> str:
    """Invite `email` through the Members page; the path of the emailed link."""
    response = admin.client.post(admin.url("settings/invitations/new/"), {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()
    link = link_in_last_email("/accounts/invite/")
    return link.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


def is_member(email: str, admin: Member) -> bool:
    return Membership.objects.filter(organization=admin.org, user__email=email).exists()


def test_a_new_person_sets_a_password_and_joins_with_the_role_given(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    link = invite(admin, "Grace@Example.com", Role.VIEWER)
    client = Client()

    page = client.get(link)
    response = client.post(
        link, {"name": "Grace Hopper", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )

    assert mail.outbox[-1].to == ["grace@example.com"]
    assert f"invited you to join {admin.org.name}" in mail.outbox[-1].body
    assert "Choose a password" in page.content.decode()
    assert response.status_code == 302
    assert response["Location"] == admin.url()
    membership = Membership.objects.get(organization=admin.org, user__email="grace@example.com")
    assert membership.role == Role.VIEWER
    assert membership.user.get_full_name() == "Grace Hopper"
    assert client.get(admin.url("settings/general/")).status_code == 200  # signed in as Grace
    assert Client().login(username="grace@example.com", password=NEW_PASSWORD)
    assert Invitation.objects.get(email="grace@example.com").accepted_by == membership.user


def test_the_link_names_the_host_the_admin_used(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    admin.client.defaults["HTTP_HOST"] = "localhost:8123"

    admin.client.post(admin.url("settings/invitations/new/"), {"email": "ada@example.com", "role": "member"})

    assert link_in_last_email("/accounts/invite/").startswith(
        f"http://localhost:8123/accounts/invite/{TOKEN_PREFIX}"
    )


def test_it_stores_only_a_hash_of_the_token(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    link = invite(admin, "ada@example.com")

    token = link.rstrip("/").rsplit("/", 1)[1]
    row = Invitation.objects.filter(email="ada@example.com").values().get()
    assert row["token_hash"] == hash_secret(token)
    assert token not in str(row)


def test_a_new_persons_password_must_pass_the_validators(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    link = invite(admin, "ada@example.com")

    response = Client().post(link, {"password1": "ada@example.com", "password2": "ada@example.com"})

    assert response.status_code == 400
    assert "too similar" in response.content.decode()
    assert not User.objects.filter(email="ada@example.com").exists()


def test_a_signed_in_person_with_the_invited_email_joins_at_once(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    elsewhere = sign_in(Role.OWNER)  # a member of another organisation
    link = invite(admin, elsewhere.user.email, Role.ADMIN)

    response = elsewhere.client.get(link)

    assert response.status_code == 302
    assert response["Location"] == admin.url()
    assert Membership.objects.get(organization=admin.org, user=elsewhere.user).role == Role.ADMIN
    assert Membership.objects.filter(user=elsewhere.user).count() == 2


def test_someone_with_an_account_signs_in_first_then_joins(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    existing = sign_in(Role.VIEWER)
    link = invite(admin, existing.user.email)
    client = Client()

    page = client.get(link)
    joined_before_signing_in = is_member(existing.user.email, admin)
    signed_in = client.post(
        "/accounts/login/", {"username": existing.user.email, "password": PASSWORD, "next": link}
    )
    joined = client.get(signed_in["Location"])

    assert "Sign in to accept" in page.content.decode()
    assert not joined_before_signing_in
    assert signed_in["Location"] == link
    assert joined["Location"] == admin.url()
    assert is_member(existing.user.email, admin)


def test_the_wrong_person_signed_in_is_told_and_does_not_join(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    someone_else = sign_in(Role.VIEWER)
    link = invite(admin, "ada@example.com")

    response = someone_else.client.get(link)

    assert response.status_code == 403
    html = response.content.decode()
    assert "This invitation is for ada@example.com" in html
    assert f"you are signed in as {someone_else.user.email}" in html
    assert not is_member(someone_else.user.email, admin)
    assert Invitation.objects.get(email="ada@example.com").accepted_at is None


def test_an_expired_invitation_says_so_and_makes_no_member(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    link = invite(admin, "ada@example.com")
    Invitation.objects.filter(email="ada@example.com").update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    page = Client().get(link)
    post = Client().post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert page.status_code == post.status_code == 410
    assert "expired" in page.content.decode()
    assert "Ask an admin" in page.content.decode()
    assert not User.objects.filter(email="ada@example.com").exists()


def test_a_revoked_invitation_says_so_and_makes_no_member(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    link = invite(admin, "ada@example.com")
    invitation = Invitation.objects.get(email="ada@example.com")

    revoked = admin.client.post(admin.url(f"settings/invitations/{invitation.id}/revoke/"))
    page = Client().post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert revoked.status_code == 302
    assert page.status_code == 410
    assert "was withdrawn" in page.content.decode()
    assert not User.objects.filter(email="ada@example.com").exists()


def test_an_invitation_accepted_once_cannot_be_used_again(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    link = invite(admin, "ada@example.com")
    first = Client()
    first.post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    again_signed_in = first.get(link)
    again_anonymous = Client().post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert again_signed_in.status_code == again_anonymous.status_code == 410
    assert "already been used" in again_signed_in.content.decode()
    assert Membership.objects.filter(organization=admin.org, user__email="ada@example.com").count() == 1
    assert User.objects.filter(email="ada@example.com").count() == 1


def test_an_unknown_link_is_a_clear_404(db: None, client: Client) -> None:
    response = client.get(f"/accounts/invite/{TOKEN_PREFIX}not-a-real-token/")

    assert response.status_code == 404
    assert "This invitation link is not valid" in response.content.decode()


def test_resending_mails_a_new_link_and_the_old_one_stops_working(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    old = invite(admin, "ada@example.com")
    invitation = Invitation.objects.get(email="ada@example.com")
    Invitation.objects.filter(id=invitation.id).update(expires_at=timezone.now() - timedelta(days=1))

    response = admin.client.post(admin.url(f"settings/invitations/{invitation.id}/resend/"))
    new = link_in_last_email("/accounts/invite/")

    assert response.status_code == 302
    assert len(mail.outbox) == 2
    assert Client().get(old).status_code == 404
    assert Client().get(new).status_code == 200
    assert Invitation.objects.get(id=invitation.id).expires_at > timezone.now() + timedelta(days=6)


def test_the_members_page_lists_open_invitations_for_admins(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    viewer = sign_in(Role.VIEWER, org=admin.org)
    invite(admin, "ada@example.com")

    admin_html = admin.client.get(admin.url("settings/members/")).content.decode()
    viewer_html = viewer.client.get(viewer.url("settings/members/")).content.decode()

    assert 'data-invitation="ada@example.com"' in admin_html
    assert 'data-action="resend"' in admin_html
    assert "ada@example.com" not in viewer_html


def test_an_admin_cannot_invite_an_owner_but_an_owner_can(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    owner = sign_in(Role.OWNER, org=admin.org)

    refused = admin.client.post(
        admin.url("settings/invitations/new/"), {"email": "ada@example.com", "role": "owner"}
    )
    accepted = owner.client.post(
        owner.url("settings/invitations/new/"), {"email": "ada@example.com", "role": "owner"}
    )

    assert refused.status_code == 400
    assert "Select a valid choice" in refused.content.decode()
    assert accepted.status_code == 302
    assert Invitation.objects.get(email="ada@example.com").role == Role.OWNER


def test_it_refuses_to_invite_a_member_or_someone_invited_already(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    colleague = sign_in(Role.VIEWER, org=admin.org)
    invite(admin, "ada@example.com")

    member = admin.client.post(
        admin.url("settings/invitations/new/"), {"email": colleague.user.email, "role": "member"}
    )
    twice = admin.client.post(
        admin.url("settings/invitations/new/"), {"email": "ADA@example.com", "role": "member"}
    )

    assert member.status_code == twice.status_code == 400
    assert "is already a member" in member.content.decode()
    assert "use Resend" in twice.content.decode()
    assert Invitation.objects.filter(email="ada@example.com").count() == 1
    assert len(mail.outbox) == 1


def test_an_expired_invitation_is_replaced_by_a_new_one(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    old = invite(admin, "ada@example.com", Role.VIEWER)
    Invitation.objects.filter(email="ada@example.com").update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    new = invite(admin, "ada@example.com", Role.ADMIN)

    assert Client().get(old).status_code == 410
    Client().post(new, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert Membership.objects.get(organization=admin.org, user__email="ada@example.com").role == Role.ADMIN


def test_an_email_that_cannot_be_sent_keeps_no_invitation_and_says_what_to_check(
    sign_in: SignIn, settings: Settings
) -> None:
    admin = sign_in(Role.ADMIN)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # nothing listens on port 1
    settings.EMAIL_USE_TLS = False

    response = admin.client.post(
        admin.url("settings/invitations/new/"), {"email": "ada@example.com", "role": "member"}
    )

    assert response.status_code == 400
    assert "could not be sent" in response.content.decode()
    assert "COSTLINE_EMAIL_" in response.content.decode()
    assert not Invitation.objects.filter(email="ada@example.com").exists()
