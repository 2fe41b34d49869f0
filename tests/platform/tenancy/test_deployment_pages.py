"""Settings → Deployments: admins set a self-hosted deployment's hourly price; everyone sees its busy
and idle cost; bad prices are refused with a message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from costline.tenancy.actions import create_organization
from costline.tenancy.models import Role
from costline.usage.models import Deployment, DeploymentMinute
from tests.platform.tenancy.conftest import Member

SignIn = Callable[..., Member]


def test_an_admin_creates_a_deployment(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    fields = {"name": "H100 box", "provider": "vllm", "model_pattern": "llama-*", "hourly_usd": "2.49"}

    response = admin.client.post(admin.url("settings/deployments/new/"), fields, follow=True)

    assert "priced from $2.49 an hour" in response.content.decode()
    deployment = Deployment.objects.get(tenant=admin.org)
    assert (deployment.hourly_usd, deployment.model_pattern) == (Decimal("2.49"), "llama-*")
    theirs = Deployment.objects.create(tenant=create_organization("Theirs"), name="x", hourly_usd=1)
    assert admin.client.get(admin.url(f"settings/deployments/{theirs.id}/")).status_code == 404
    assert admin.client.post(admin.url(f"settings/deployments/{theirs.id}/delete/")).status_code == 404


def test_a_price_of_zero_is_refused(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    fields = {"name": "free?", "provider": "vllm", "model_pattern": "*", "hourly_usd": "0"}

    response = admin.client.post(admin.url("settings/deployments/new/"), fields)

    assert response.status_code == 400
    assert "must be more than $0" in response.content.decode()


def test_the_page_shows_busy_and_idle_cost_to_everyone_but_only_admins_edit(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)
    deployment = Deployment.objects.create(tenant=viewer.org, name="CPU tier", hourly_usd=Decimal("0.6"))
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    DeploymentMinute.objects.create(
        deployment=deployment,
        tenant=viewer.org,
        minute=minute,
        calls=3,
        busy_seconds=15,
        busy_usd=Decimal("0.0025"),
        idle_usd=Decimal("0.0075"),
    )
    other = Deployment.objects.create(tenant=create_organization("Other"), name="Not yours", hourly_usd=1)

    html = viewer.client.get(viewer.url("settings/deployments/")).content.decode()

    assert "CPU tier" in html
    assert "25%" in html  # busy $0.0025 of the $0.01 the minute cost
    assert "Not yours" not in html
    assert viewer.client.post(viewer.url(f"settings/deployments/{deployment.id}/delete/")).status_code == 403
    assert viewer.client.get(viewer.url(f"settings/deployments/{other.id}/")).status_code == 403
