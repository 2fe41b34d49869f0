"""Which organisation an API request acts for, and whether the caller may change things there."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from costline.tenancy.models import ApiToken, Membership, Organization, Role, User
from costline.tenancy.web import current_membership, role_at_least


def organization_for(request: Request) -> Organization:
    """The tenant of an authenticated request: the API token's, else the signed-in user's.

    A token names its organisation, even when it belongs to a person who is a member of several.
    A browser session acts for the organisation whose pages it last opened (else the user's first).
    """
    if isinstance(request.auth, ApiToken):
        return request.auth.organization
    if isinstance(request.user, User):
        membership = current_membership(request._request)
        if membership is not None:
            return membership.organization
    raise PermissionDenied(
        "This account is not a member of any organisation: ask an owner to invite you, "
        "or call the API with an organisation's token ('Authorization: Bearer <api token>')."
    )


def check_member(request: Request, organization: Organization, doing: str) -> None:
    """403 unless the caller has at least the member role in the organisation; `doing` names the change
    ("Changing alerts"). An organisation-wide API token acts as a member."""
    user = request.user if isinstance(request.user, User) else None
    if user is None:
        return
    membership = Membership.objects.filter(organization=organization, user=user).first()
    if membership is None or not role_at_least(membership, Role.MEMBER):
        role = Role(membership.role).label.lower() if membership else "not a member"
        raise PermissionDenied(
            f"{doing} needs the member role in {organization.name}; you are {role}. "
            "Ask an owner or admin to change your role."
        )
