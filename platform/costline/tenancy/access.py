"""Which organisation an API request acts for."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from costline.tenancy.models import ApiToken, Membership, Organization, User


def organization_for(request: Request) -> Organization:
    """The tenant of an authenticated request: the API token's, else the signed-in user's.

    A token names its organisation, even when it belongs to a person who is a member of several.
    A session has no organisation of its own yet, so it acts for the user's first membership until
    the web UI lets a person switch between organisations.
    """
    if isinstance(request.auth, ApiToken):
        return request.auth.organization
    user = request.user
    if isinstance(user, User):
        membership = (
            Membership.objects.filter(user=user)
            .select_related("organization")
            .order_by("created_at", "id")
            .first()
        )
        if membership is not None:
            return membership.organization
    raise PermissionDenied(
        "This account is not a member of any organisation: ask an owner to invite you, "
        "or call the API with an organisation's token ('Authorization: Bearer <api token>')."
    )
