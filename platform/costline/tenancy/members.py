"""Who may change whose role, who may remove whom, and the one invariant: an organisation keeps an owner.

Rules (see also costline.tenancy.web for what each role may see):

- only admins and owners manage members; nobody grants a role above their own, so only owners make
  owners, and admins cannot change or remove an owner;
- anyone may leave an organisation;
- the last owner can be neither demoted nor removed, and cannot leave: another member must be made an
  owner first.

Checks of the owner count lock the organisation's owner rows, so two owners demoting each other at the
same moment cannot leave the organisation without one.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from costline.tenancy.models import ApiToken, Membership, Role
from costline.tenancy.web import ROLE_RANK, role_at_least


class NotAllowed(PermissionDenied):
    """The acting member's role does not allow this (answered 403)."""


class LastOwner(Exception):
    """The change would leave the organisation without an owner."""


def grantable_roles(actor: Membership) -> list[Role]:
    """The roles `actor` may give, highest first: none below admin, at most their own."""
    if not role_at_least(actor, Role.ADMIN):
        return []
    rank = ROLE_RANK[Role(actor.role)]
    return [role for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER) if ROLE_RANK[role] <= rank]


def check_can_grant(actor: Membership, role: Role) -> None:
    if role not in grantable_roles(actor):
        if not role_at_least(actor, Role.ADMIN):
            raise NotAllowed("Only admins and owners can invite members or change roles.")
        own = Role(actor.role).label.lower()
        raise NotAllowed(
            f"Only an owner can make someone {role.label.lower()}; "
            f"as {own} you can give at most the {own} role."
        )


def can_manage(actor: Membership, target: Membership) -> bool:
    """Whether `actor` may change `target`'s role or remove them (the last-owner rule aside)."""
    if not role_at_least(actor, Role.ADMIN):
        return False
    return target.role != Role.OWNER or actor.role == Role.OWNER


def _check_manage(actor: Membership, target: Membership) -> None:
    if not role_at_least(actor, Role.ADMIN):
        raise NotAllowed("Only admins and owners can change members' roles or remove members.")
    if not can_manage(actor, target):
        raise NotAllowed(f"Only an owner can change or remove an owner ({target.user.email}).")


def _check_keeps_an_owner(target: Membership, losing: str) -> None:
    owners = list(
        Membership.objects.select_for_update()
        .filter(organization_id=target.organization_id, role=Role.OWNER)
        .values_list("id", flat=True)
    )
    if owners == [target.id]:
        raise LastOwner(
            f"{target.user.email} is the only owner of {target.organization.name}, so they cannot "
            f"{losing}. Make another member an owner first."
        )


@transaction.atomic
def change_role(actor: Membership, target: Membership, role: Role) -> bool:
    """Give `target` the role `role`; False when they already have it."""
    _check_manage(actor, target)
    check_can_grant(actor, role)
    if target.role == role:
        return False
    if target.role == Role.OWNER:
        _check_keeps_an_owner(target, "stop being an owner")
    Membership.objects.filter(id=target.id).update(role=role)
    target.role = role
    return True


@transaction.atomic
def remove_member(actor: Membership, target: Membership) -> None:
    """Remove `target` from their organisation (`actor` is `target` when a member leaves).

    Their personal API tokens for the organisation are revoked with the membership.
    """
    if actor.id != target.id:
        _check_manage(actor, target)
    if target.role == Role.OWNER:
        _check_keeps_an_owner(target, "leave" if actor.id == target.id else "be removed")
    ApiToken.objects.filter(
        organization_id=target.organization_id, user_id=target.user_id, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    target.delete()
