"""REST API authentication by `Authorization: Bearer <api token>`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from costline.tenancy.actions import resolve_api_token
from costline.tenancy.models import ApiToken, Organization

# last_used_at is informative; writing it on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class OrganizationPrincipal:
    """The caller behind an organisation-wide API token (no person attached)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    pk = None

    def __init__(self, organization: Organization) -> None:
        self.organization = organization

    def __str__(self) -> str:
        return f"api token of {self.organization}"


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("The Authorization header must be 'Bearer <api token>'.")
        token = resolve_api_token(parts[1].decode(errors="replace"))
        if token is None:
            raise AuthenticationFailed(
                "Unknown or revoked API token. Create a token in Settings → API tokens "
                "(or with `python manage.py create_tenant`) and send it as 'Authorization: Bearer <token>'."
            )
        if (
            token.user is not None
            and not token.user.memberships.filter(organization=token.organization).exists()
        ):
            raise AuthenticationFailed(
                "This API token belongs to a person who is no longer a member of its organisation; "
                "ask an admin for an organisation token or a new membership."
            )
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        principal: Any = token.user if token.user is not None else OrganizationPrincipal(token.organization)
        return principal, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="costline"'
