"""Settings → Notification channels: who reads and who writes, validation, the test button, isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail

from costline.alerts.models import Channel, ChannelKind, Delivery, DeliveryStatus
from costline.tenancy.models import Role
from tests.platform.alerts.conftest import Member, Receiver

pytestmark = pytest.mark.django_db

SignIn = Callable[..., Member]
MakeChannel = Callable[..., Channel]


def test_a_viewer_reads_the_list_without_secrets(sign_in: SignIn, make_channel: MakeChannel) -> None:
    viewer = sign_in(Role.VIEWER)
    make_channel(viewer.org, ChannelKind.EMAIL, "ops@example.com", name="Ops mail")
    slack = make_channel(viewer.org, ChannelKind.SLACK, "https://hooks.slack.com/services/T0/B0/s3cr3t")
    hook = make_channel(viewer.org, ChannelKind.WEBHOOK, "https://example.com/hook?token=abc")

    page = viewer.client.get(viewer.url("settings/channels/"))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Ops mail" in html
    assert "ops@example.com" in html
    assert "https://hooks.slack.com/…" in html
    assert "s3cr3t" not in html
    assert "token=abc" not in html
    assert "New channel" not in html
    detail = viewer.client.get(viewer.url(f"settings/channels/{hook.id}/")).content.decode()
    assert hook.signing_secret not in detail
    assert "Send test" not in detail
    assert viewer.client.get(viewer.url(f"settings/channels/{slack.id}/")).status_code == 200


def test_an_admin_creates_a_webhook_channel_with_a_signing_secret(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/channels/new/"),
        {"name": "Pager", "kind": "webhook", "target": "https://example.com/hooks/costline", "enabled": "on"},
    )

    channel = Channel.objects.get(organization=admin.org)
    assert response.status_code == 302
    assert response["Location"] == admin.url(f"settings/channels/{channel.id}/")
    assert channel.signing_secret.startswith("whsec_")
    assert len(channel.signing_secret) > 40
    page = admin.client.get(response["Location"]).content.decode()
    assert channel.signing_secret in page
    assert "https://example.com/hooks/costline" in page


@pytest.mark.parametrize(
    ("kind", "target", "error"),
    [
        ("email", "ops@example.com, not-an-address", "Not an email address: not-an-address"),
        ("webhook", "ftp://example.com/x", "needs an http:// or https:// URL"),
        ("slack", "hooks.slack.com/services/x", "needs an http:// or https:// URL"),
        ("webhook", "", "This field is required"),
    ],
)
def test_an_invalid_target_is_a_400_saying_what_to_fix(
    sign_in: SignIn, kind: str, target: str, error: str
) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/channels/new/"), {"name": "X", "kind": kind, "target": target}
    )

    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Channel.objects.filter(organization=admin.org).exists()


def test_email_recipients_are_normalised(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    admin.client.post(
        admin.url("settings/channels/new/"),
        {"name": "Mail", "kind": "email", "target": " a@example.com,b@example.com , a@example.com,"},
    )

    assert Channel.objects.get(organization=admin.org).target == "a@example.com, b@example.com"


def test_an_admin_edits_and_deletes_a_channel(sign_in: SignIn, make_channel: MakeChannel) -> None:
    admin = sign_in(Role.ADMIN)
    channel = make_channel(admin.org, ChannelKind.EMAIL, "a@example.com")

    edited = admin.client.post(
        admin.url(f"settings/channels/{channel.id}/edit/"),
        {"name": "Finance", "kind": "email", "target": "cfo@example.com"},
    )
    channel.refresh_from_db()
    assert edited.status_code == 302
    assert (channel.name, channel.target, channel.enabled) == ("Finance", "cfo@example.com", False)

    deleted = admin.client.post(admin.url(f"settings/channels/{channel.id}/delete/"))
    assert deleted.status_code == 302
    assert not Channel.objects.filter(id=channel.id).exists()


def test_send_test_delivers_a_sample_budget_event(
    sign_in: SignIn,
    make_channel: MakeChannel,
    receiver: Receiver,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    admin = sign_in(Role.ADMIN)
    channel = make_channel(admin.org, ChannelKind.WEBHOOK, receiver.url)
    receiver.secret = channel.signing_secret

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.client.post(admin.url(f"settings/channels/{channel.id}/test/"))

    assert response.status_code == 302
    delivery = Delivery.objects.get(channel=channel)
    assert delivery.source.startswith("test:")
    assert delivery.status == DeliveryStatus.SENT
    [request] = receiver.received
    assert request.signature_ok
    assert request.json["event"] == "budget.threshold"
    assert request.json["test"] is True
    assert request.json["spend_usd"] == "80.00"
    page = admin.client.get(response["Location"]).content.decode()
    assert f'data-delivery="{delivery.id}" data-status="sent"' in page


def test_each_test_is_a_new_delivery(sign_in: SignIn, make_channel: MakeChannel) -> None:
    admin = sign_in(Role.ADMIN)
    channel = make_channel(admin.org, ChannelKind.EMAIL, "a@example.com")

    admin.client.post(admin.url(f"settings/channels/{channel.id}/test/"))
    admin.client.post(admin.url(f"settings/channels/{channel.id}/test/"))

    assert Delivery.objects.filter(channel=channel).count() == 2
    assert mail.outbox == []  # queued, not sent inside the request


def test_the_pages_show_each_deliverys_outcome(sign_in: SignIn, make_channel: MakeChannel) -> None:
    viewer = sign_in(Role.VIEWER)
    channel = make_channel(viewer.org, ChannelKind.WEBHOOK, "https://example.com/h")
    Delivery.objects.create(
        organization=viewer.org,
        channel=channel,
        source="budget_event:1",
        subject="Budget Search reached 80%",
        payload={},
        status=DeliveryStatus.RETRYING,
        attempts=2,
        response_status=503,
        last_error="HTTP 503: busy",
    )

    listing = viewer.client.get(viewer.url("settings/channels/")).content.decode()
    detail = viewer.client.get(viewer.url(f"settings/channels/{channel.id}/")).content.decode()

    assert "Retrying" in listing
    assert "Budget Search reached 80%" in detail
    assert "HTTP 503: busy" in detail
    assert ">503<" in detail


def test_a_webhook_secret_can_be_rotated(sign_in: SignIn, make_channel: MakeChannel) -> None:
    admin = sign_in(Role.ADMIN)
    channel = make_channel(admin.org, ChannelKind.WEBHOOK, "https://example.com/h")
    before = channel.signing_secret

    admin.client.post(admin.url(f"settings/channels/{channel.id}/rotate-secret/"))

    channel.refresh_from_db()
    assert channel.signing_secret != before
    assert channel.signing_secret.startswith("whsec_")


# --- who may -------------------------------------------------------------------------------------------

WRITES = ["new/", "{id}/edit/", "{id}/delete/", "{id}/test/", "{id}/rotate-secret/"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
@pytest.mark.parametrize("path", WRITES)
def test_below_admin_every_write_is_a_403(
    sign_in: SignIn, make_channel: MakeChannel, role: Role, path: str
) -> None:
    member = sign_in(role)
    channel = make_channel(member.org, ChannelKind.WEBHOOK, "https://example.com/h")

    response = member.client.post(
        member.url("settings/channels/" + path.format(id=channel.id)),
        {"name": "X", "kind": "email", "target": "a@example.com"},
    )

    assert response.status_code == 403
    assert Channel.objects.filter(organization=member.org).get() == channel
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("path", ["{id}/", *WRITES[1:]])
def test_another_organisations_channel_is_a_404(
    sign_in: SignIn, make_channel: MakeChannel, path: str
) -> None:
    admin = sign_in(Role.OWNER)
    other = sign_in(Role.OWNER)
    theirs = make_channel(other.org, ChannelKind.WEBHOOK, "https://example.com/theirs")

    url = admin.url("settings/channels/" + path.format(id=theirs.id))
    response = admin.client.post(url) if path != "{id}/" else admin.client.get(url)

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "webhook channel"
    assert not Delivery.objects.filter(channel=theirs).exists()


def test_another_organisations_slug_is_a_404(sign_in: SignIn) -> None:
    member = sign_in(Role.ADMIN)
    other = sign_in(Role.ADMIN)

    assert member.client.get(other.url("settings/channels/")).status_code == 404
