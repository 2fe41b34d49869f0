"""notify(): one delivery per channel and source, queued after commit, sent by the notifications queue."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from costline.alerts.models import Channel, ChannelKind, Delivery, DeliveryStatus
from costline.alerts.notify import notify
from tests.platform.alerts.conftest import Receiver

pytestmark = pytest.mark.django_db

MakeChannel = Callable[..., Channel]


def test_it_creates_one_pending_delivery_per_channel(make_tenant: Any, make_channel: MakeChannel) -> None:
    org = make_tenant().org
    email = make_channel(org, ChannelKind.EMAIL, "a@example.com")
    hook = make_channel(org, ChannelKind.WEBHOOK, "http://127.0.0.1:9/x")

    ids = notify(org.id, [email.id, hook.id], "budget_event:1", "Budget reached 80%", {"threshold": 80})

    deliveries = Delivery.objects.filter(id__in=ids)
    assert {d.channel_id for d in deliveries} == {email.id, hook.id}
    assert {d.status for d in deliveries} == {DeliveryStatus.PENDING}
    assert all(d.organization_id == org.id and d.payload == {"threshold": 80} for d in deliveries)


def test_it_is_idempotent_on_channel_and_source(make_tenant: Any, make_channel: MakeChannel) -> None:
    org = make_tenant().org
    channel = make_channel(org, ChannelKind.EMAIL, "a@example.com")

    first = notify(org.id, [channel.id], "budget_event:7", "Reached 50%", {"n": 1})
    again = notify(org.id, [channel.id], "budget_event:7", "Reached 50%", {"n": 2})

    assert first == again
    assert Delivery.objects.get(id=first[0]).payload == {"n": 1}
    assert Delivery.objects.filter(channel=channel).count() == 1


def test_it_skips_another_organisations_and_disabled_channels(
    make_tenant: Any, make_channel: MakeChannel
) -> None:
    org, other = make_tenant().org, make_tenant().org
    mine = make_channel(org, ChannelKind.EMAIL, "a@example.com")
    disabled = make_channel(org, ChannelKind.EMAIL, "b@example.com", enabled=False)
    theirs = make_channel(other, ChannelKind.EMAIL, "c@example.com")

    ids = notify(org.id, [mine.id, disabled.id, theirs.id], "budget_event:3", "Subject", {})

    assert [Delivery.objects.get(id=i).channel_id for i in ids] == [mine.id]
    assert not Delivery.objects.filter(channel__in=[disabled, theirs]).exists()


def test_money_in_the_payload_stays_exact(make_tenant: Any, make_channel: MakeChannel) -> None:
    org = make_tenant().org
    channel = make_channel(org, ChannelKind.EMAIL, "a@example.com")

    [delivery_id] = notify(org.id, [channel.id], "s", "S", {"spend_usd": Decimal("80.000000000001")})

    assert Delivery.objects.get(id=delivery_id).payload == {"spend_usd": "80.000000000001"}


def test_it_refuses_a_source_that_cannot_be_stored(make_tenant: Any) -> None:
    with pytest.raises(ValueError, match="source must be 1 to 100 characters"):
        notify(make_tenant().org.id, [], "x" * 101, "S", {})


def test_it_sends_once_the_transaction_commits(
    make_tenant: Any,
    make_channel: MakeChannel,
    receiver: Receiver,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    org = make_tenant().org
    channel = make_channel(org, ChannelKind.WEBHOOK, receiver.url)
    receiver.secret = channel.signing_secret

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        [delivery_id] = notify(org.id, [channel.id], "budget_event:9", "Reached 100%", {"threshold": 100})
        assert receiver.received == []  # nothing leaves before the commit

    assert len(callbacks) == 1
    assert [r.json for r in receiver.received] == [{"threshold": 100}]
    assert receiver.received[0].signature_ok
    assert Delivery.objects.get(id=delivery_id).status == DeliveryStatus.SENT


def test_a_repeated_notify_queues_nothing_new(
    make_tenant: Any, make_channel: MakeChannel, django_capture_on_commit_callbacks: Any
) -> None:
    org = make_tenant().org
    channel = make_channel(org, ChannelKind.EMAIL, "a@example.com")
    notify(org.id, [channel.id], "budget_event:5", "S", {})

    with django_capture_on_commit_callbacks() as callbacks:
        notify(org.id, [channel.id], "budget_event:5", "S", {})

    assert callbacks == []
