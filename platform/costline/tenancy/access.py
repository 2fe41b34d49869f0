"""Which organisation an API request acts for."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from costline.tenancy.models import ApiToken, Organization, User
from costline.tenancy.web import current_membership


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
