"""Which organisation a web page acts for, and who may do what there.

Pages of an organisation live under `/o/<slug>/`, so a link names its organisation and can be shared
between members. `org_view` resolves the slug through the signed-in user's memberships: a slug the
user is not a member of is answered 404, exactly like one that does not exist, so nobody learns which
organisations exist. Objects inside an organisation are always looked up through `request.organization`
(never by id alone), so another organisation's id is a 404 as well.

Roles rank viewer < member < admin < owner:

- viewer: reads every page and exports;
- member: also creates API tokens of their own;
- admin: also manages projects, ingest keys, organisation API tokens, price overrides, invitations,
  members below owner, and the time zone;
- owner: also makes or removes owners.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

from costline.tenancy.models import Membership, Organization, Role

ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}
SESSION_KEY = "organization_id"

# HttpResponseBase: a view may answer with a streamed download (StreamingHttpResponse) as well.
View = TypeVar("View", bound=Callable[..., HttpResponseBase])


class OrgRequest(HttpRequest):
    """An HttpRequest after `org_view`: the organisation and the user's membership in it."""

    organization: Organization
    membership: Membership


def role_at_least(membership: Membership, role: Role) -> bool:
    return ROLE_RANK[Role(membership.role)] >= ROLE_RANK[role]


def org_view(min_role: Role = Role.VIEWER) -> Callable[[View], View]:
    """Decorate a view taking `org` (the slug) first: sign-in, membership (else 404) and role (else 403).

    The view receives the request with `organization` and `membership` set, and without the slug.
    The organisation becomes the session's current one, which the API's session authentication and
    `/` use.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, org: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = (
                Membership.objects.select_related("organization")
                .filter(user=request.user, organization__slug=org)
                .first()
            )
            if membership is None:
                raise Http404("No such organisation.")
            if not role_at_least(membership, min_role):
                raise PermissionDenied(
                    f"This needs the {min_role.label.lower()} role in {membership.organization.name}; "
                    f"you are {Role(membership.role).label.lower()}. Ask an owner or admin to change it."
                )
            org_request = cast(OrgRequest, request)
            org_request.organization = membership.organization
            org_request.membership = membership
            if request.session.get(SESSION_KEY) != membership.organization_id:
                request.session[SESSION_KEY] = membership.organization_id
            return view(org_request, *args, **kwargs)

        return cast(View, wrapper)

    return decorate


def current_membership(request: HttpRequest) -> Membership | None:
    """The signed-in user's membership in the session's current organisation, else their first one."""
    if not request.user.is_authenticated:
        return None
    memberships = Membership.objects.select_related("organization").filter(user=request.user)
    current = request.session.get(SESSION_KEY)
    if current is not None:
        membership = memberships.filter(organization_id=current).first()
        if membership is not None:
            return membership
    return memberships.order_by("created_at", "id").first()


def organization_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: the current organisation, the user's role there, the organisations to switch to."""
    organization = getattr(request, "organization", None)
    if organization is None or not request.user.is_authenticated:
        return {}
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return {
        "organization": organization,
        "membership": membership,
        "is_admin": role_at_least(membership, Role.ADMIN),
        "switchable": [
            m.organization
            for m in Membership.objects.select_related("organization")
            .filter(user=request.user)
            .order_by("organization__name")
        ],
    }
