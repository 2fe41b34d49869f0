"""Inviting people by email: an admin invites an address with a role, the invitee opens the link and joins.

The link is `/accounts/invite/<token>/`; the token is random (256 bits) and stored only as its hash,
so the database never holds a working link. An invitation is good for INVITATION_DAYS and once; a
resend issues a new token (the old link stops working) and starts the days again.

Opening a link: a signed-in person whose email is the invited one joins at once; someone without an
account sets a password, which creates the account, and joins; someone with an account signs in first.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from costline.tenancy.keys import hash_secret, new_secret
from costline.tenancy.members import check_can_grant
from costline.tenancy.models import Invitation, Membership, Role, User

INVITATION_DAYS = 7
TOKEN_PREFIX = "clinv_"  # noqa: S105 - a prefix, not a secret


class InvitationError(Exception):
    """An invitation cannot be made, sent or used; the message says why and what to do."""


@dataclass(frozen=True)
class Sent:
    invitation: Invitation
    link: str  # returned for tests and logs of the caller; never stored


def invite(actor: Membership, email: str, role: Role, *, site_url: str) -> Sent:
    """Invite `email` to `actor`'s organisation with `role` and email them the link.

    `site_url` is the scheme and host the link points at (the request's, so it matches how people reach
    this deployment). Raises NotAllowed when `actor` may not give `role`, InvitationError when the
    address is already a member or invited, or when the email cannot be sent (then nothing is kept).
    """
    check_can_grant(actor, role)
    email = email.strip().lower()
    org = actor.organization
    if Membership.objects.filter(organization=org, user__email__iexact=email).exists():
        raise InvitationError(f"{email} is already a member of {org.name}.")
    now = timezone.now()
    with transaction.atomic():
        pending = Invitation.objects.open().select_for_update().filter(organization=org, email=email).first()
        if pending is not None:
            if pending.expires_at > now:
                raise InvitationError(
                    f"{email} was already invited on {pending.sent_at:%Y-%m-%d}; "
                    "use Resend on that invitation to send the link again."
                )
            # An expired invitation is replaced: the new one carries the role asked for now.
            pending.revoked_at = now
            pending.save(update_fields=["revoked_at"])
        token = new_secret(TOKEN_PREFIX)
        try:
            with transaction.atomic():
                invitation = Invitation.objects.create(
                    organization=org,
                    email=email,
                    role=role,
                    token_hash=hash_secret(token),
                    invited_by=actor.user,
                    created_at=now,
                    sent_at=now,
                    expires_at=now + timedelta(days=INVITATION_DAYS),
                )
        except IntegrityError:
            raise InvitationError(f"{email} was invited a moment ago by someone else.") from None
        link = _link(site_url, token)
        _send(invitation, link)  # inside the transaction: an email that fails keeps no invitation
    return Sent(invitation, link)


def resend(actor: Membership, invitation: Invitation, *, site_url: str) -> Sent:
    """Email a new link for an open invitation (expired ones too) and give it INVITATION_DAYS again."""
    check_can_grant(actor, Role(invitation.role))
    if invitation.status in ("accepted", "revoked"):
        raise InvitationError(
            f"The invitation of {invitation.email} was {invitation.status}; invite them again instead."
        )
    token = new_secret(TOKEN_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        invitation.token_hash = hash_secret(token)
        invitation.sent_at = now
        invitation.expires_at = now + timedelta(days=INVITATION_DAYS)
        invitation.invited_by = actor.user
        invitation.save(update_fields=["token_hash", "sent_at", "expires_at", "invited_by"])
        link = _link(site_url, token)
        _send(invitation, link)
    return Sent(invitation, link)


def revoke(actor: Membership, invitation: Invitation) -> bool:
    """Make an open invitation's link stop working; False when it was accepted or revoked already."""
    check_can_grant(actor, Role(invitation.role))
    return bool(Invitation.objects.open().filter(id=invitation.id).update(revoked_at=timezone.now()))


def find(token: str) -> Invitation | None:
    """The invitation a link's token belongs to, whatever its state; None for an unknown token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(token_hash=hash_secret(token))
        .first()
    )


def check_usable(invitation: Invitation) -> None:
    """Raise InvitationError with what to do when the invitation can no longer be used."""
    org = invitation.organization.name
    if invitation.accepted_at is not None:
        raise InvitationError(
            f"This invitation to {org} has already been used. Sign in as {invitation.email} to open "
            "the organisation, or ask an admin for a new invitation."
        )
    if invitation.revoked_at is not None:
        raise InvitationError(
            f"This invitation to {org} was withdrawn. Ask an admin of {org} for a new invitation."
        )
    if invitation.expires_at <= timezone.now():
        raise InvitationError(
            f"This invitation to {org} expired on {invitation.expires_at:%Y-%m-%d}. "
            f"Ask an admin of {org} to resend it."
        )


def accept(invitation: Invitation, user: User) -> Membership:
    """`user` joins the invitation's organisation with its role; the invitation is used up.

    Raises InvitationError when it is used, withdrawn or expired, or addressed to another email. A
    person who is already a member keeps the role they have.
    """
    if user.email.lower() != invitation.email:
        raise InvitationError(
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}. "
            f"Sign out and open the link again to accept it as {invitation.email}."
        )
    with transaction.atomic():
        # Locked and read again: two tabs accepting at once must not both succeed.
        locked = Invitation.objects.select_for_update().select_related("organization").get(id=invitation.id)
        check_usable(locked)
        membership, _ = Membership.objects.get_or_create(
            organization=locked.organization, user=user, defaults={"role": locked.role}
        )
        locked.accepted_at = timezone.now()
        locked.accepted_by = user
        locked.save(update_fields=["accepted_at", "accepted_by"])
    invitation.accepted_at, invitation.accepted_by = locked.accepted_at, user
    return membership


def accept_as_new_user(invitation: Invitation, password: str, *, name: str = "") -> Membership:
    """Create the invitee's account with `password` and accept: both happen or neither.

    Raises InvitationError when an account with the address exists already (sign in instead).
    """
    first, _, last = name.strip().partition(" ")
    try:
        with transaction.atomic():
            user = User.objects.create_user(invitation.email, password, first_name=first, last_name=last)
            return accept(invitation, user)
    except IntegrityError:
        raise InvitationError(
            f"An account for {invitation.email} exists already: sign in to accept the invitation."
        ) from None


def _link(site_url: str, token: str) -> str:
    return site_url.rstrip("/") + reverse("accept_invitation", kwargs={"token": token})


def _send(invitation: Invitation, link: str) -> None:
    context = {
        "invitation": invitation,
        "organization": invitation.organization,
        "role": Role(invitation.role).label.lower(),
        "inviter": invitation.invited_by,
        "link": link,
        "days": INVITATION_DAYS,
    }
    subject = render_to_string("tenancy/invitation_subject.txt", context).strip()
    body = render_to_string("tenancy/invitation_email.txt", context)
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [invitation.email])
    except (smtplib.SMTPException, OSError) as exc:
        raise InvitationError(
            f"The invitation email to {invitation.email} could not be sent ({exc}). Check the "
            "COSTLINE_EMAIL_* settings of this deployment, then invite again."
        ) from exc
