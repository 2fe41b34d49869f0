"""Fixtures for the pages of an organisation: signed-in members of each role, and rolled-up calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from costline.tenancy.actions import create_organization
from costline.tenancy.models import Membership, Organization, Role, User
from costline.usage.models import LLMCall
from costline.usage.rollup import mark_range_dirty, process_dirty


@dataclass
class Member:
    client: Client  # signed in as `user`
    user: User
    org: Organization

    def url(self, path: str = "") -> str:
        """The URL of one of the organisation's pages: member.url("explore/")."""
        return f"/o/{self.org.slug}/{path}"


@pytest.fixture
def sign_in(db: None) -> Callable[..., Member]:
    """sign_in(role=Role.VIEWER, org=None): a new user with that role, in `org` or a new organisation."""
    counter = iter(range(1, 1_000_000))

    def make(role: Role = Role.VIEWER, org: Organization | None = None, time_zone: str = "UTC") -> Member:
        n = next(counter)
        if org is None:
            org = create_organization(f"Org {n}", time_zone=time_zone)
        user = User.objects.create_user(f"person{n}@{org.slug}.example", "correct horse battery staple")
        Membership.objects.create(organization=org, user=user, role=role)
        client = Client()
        client.force_login(user)
        return Member(client, user, org)

    return make


def roll_up(calls: list[LLMCall]) -> None:
    """Mark the calls' minutes as the collector would, and run the rollups as the worker does."""
    by_tenant: dict[int, list[datetime]] = {}
    for call in calls:
        by_tenant.setdefault(call.tenant_id, []).append(call.start_time)
    with connection.cursor() as cursor:
        for tenant_id, starts in by_tenant.items():
            mark_range_dirty(cursor, tenant_id, min(starts), max(starts) + timedelta(seconds=1))
    process_dirty()
