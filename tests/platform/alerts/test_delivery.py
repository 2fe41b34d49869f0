"""Sending deliveries: signed webhooks, Slack bodies, email, and retries with back-off.

A real HTTP server in a thread stands in for the customer's receiver; the task function runs in the
test, and the clock it is given is each scheduled retry time, so the back-off is followed without
waiting.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from costline.alerts import delivery as sending
from costline.alerts.models import Channel, ChannelKind, Delivery, DeliveryStatus
from costline.alerts.notify import notify
from costline.alerts.tasks import deliver, deliver_due
from tests.platform.alerts.conftest import Receiver

pytestmark = pytest.mark.django_db

MakeChannel = Callable[..., Channel]
EVENT = {
    "event": "budget.threshold",
    "message": "Budget “Search” reached 80% ($80.00 of $100.00).",
    "budget": "Search",
    "threshold_percent": 80,
    "spend_usd": "80.00",
    "url": "https://costline.example/o/acme/budgets/4/",
}


@pytest.fixture
def webhook(make_tenant: Any, make_channel: MakeChannel, receiver: Receiver) -> Channel:
    channel = make_channel(make_tenant().org, ChannelKind.WEBHOOK, receiver.url)
    receiver.secret = channel.signing_secret
    return channel


def _delivery(channel: Channel, source: str = "budget_event:1", payload: dict[str, Any] = EVENT) -> Delivery:
    [delivery_id] = notify(
        channel.organization_id, [channel.id], source, "Budget Search reached 80%", payload
    )
    return Delivery.objects.get(id=delivery_id)


# --- webhooks -----------------------------------------------------------------------------------------


def test_it_posts_the_payload_signed_with_the_channels_secret(webhook: Channel, receiver: Receiver) -> None:
    delivery = _delivery(webhook)

    assert deliver(delivery.id) == DeliveryStatus.SENT

    [request] = receiver.received
    assert request.signature_ok
    assert request.json == EVENT
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-costline-delivery"] == str(delivery.id)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 1, 200)
    assert delivery.sent_at is not None
    assert delivery.next_attempt_at is None


def test_a_receiver_with_another_secret_rejects_it_and_it_fails_at_once(
    webhook: Channel, receiver: Receiver
) -> None:
    receiver.secret = "whsec_not_the_channels"
    delivery = _delivery(webhook)

    assert deliver(delivery.id) == DeliveryStatus.FAILED

    delivery.refresh_from_db()
    assert receiver.received[0].signature_ok is False
    assert (delivery.attempts, delivery.response_status, delivery.next_attempt_at) == (1, 401, None)
    assert delivery.last_error.startswith("HTTP 401")


def test_it_retries_a_500_with_back_off_then_sends(webhook: Channel, receiver: Receiver) -> None:
    receiver.answer(500)
    receiver.answer(503)
    delivery = _delivery(webhook)
    start = timezone.now()

    assert sending.attempt(delivery.id, now=start) == DeliveryStatus.RETRYING
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status) == (1, 500)
    assert delivery.last_error == "HTTP 500: answer 500"
    assert delivery.next_attempt_at == start + timedelta(seconds=30)

    # Not due yet: a second message for it (the sweep, a redelivery) sends nothing.
    assert sending.attempt(delivery.id, now=start + timedelta(seconds=29)) is None
    assert len(receiver.received) == 1

    second = start + timedelta(seconds=30)
    assert sending.attempt(delivery.id, now=second) == DeliveryStatus.RETRYING
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status) == (2, 503)
    assert delivery.next_attempt_at == second + timedelta(minutes=2)

    third = second + timedelta(minutes=2)
    assert sending.attempt(delivery.id, now=third) == DeliveryStatus.SENT
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.last_error) == (3, 200, "")
    assert delivery.sent_at == third
    assert len(receiver.received) == 3
    assert all(r.signature_ok for r in receiver.received)
    assert len({r.headers["x-costline-delivery"] for r in receiver.received}) == 1


def test_it_follows_the_whole_schedule_then_gives_up(webhook: Channel, receiver: Receiver) -> None:
    for _ in range(sending.MAX_ATTEMPTS):
        receiver.answer(502)
    delivery = _delivery(webhook)
    now = timezone.now()
    waits = []

    for _ in range(sending.MAX_ATTEMPTS):
        sending.attempt(delivery.id, now=now)
        delivery.refresh_from_db()
        if delivery.next_attempt_at is not None:
            waits.append(delivery.next_attempt_at - now)
            now = delivery.next_attempt_at

    assert waits == [
        timedelta(seconds=30),
        timedelta(minutes=2),
        timedelta(minutes=8),
        timedelta(minutes=30),
        timedelta(hours=2),
    ]
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 6)
    assert delivery.last_error.startswith("Gave up after 6 attempts: HTTP 502")
    assert sending.attempt(delivery.id, now=now + timedelta(days=1)) is None
    assert len(receiver.received) == 6


def test_a_429_waits_for_its_retry_after(webhook: Channel, receiver: Receiver) -> None:
    receiver.answer(429, Retry_After="600")
    delivery = _delivery(webhook)
    now = timezone.now()

    sending.attempt(delivery.id, now=now)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status) == (DeliveryStatus.RETRYING, 429)
    assert delivery.next_attempt_at == now + timedelta(minutes=10)


def test_a_4xx_other_than_429_fails_at_once(webhook: Channel, receiver: Receiver) -> None:
    receiver.answer(410)
    delivery = _delivery(webhook)

    assert deliver(delivery.id) == DeliveryStatus.FAILED

    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.next_attempt_at) == (1, 410, None)


def test_a_timeout_is_retried(webhook: Channel, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sending, "TIMEOUT_SECONDS", 0.2)  # the receiver takes longer than that
    receiver.delay_s = 0.6
    delivery = _delivery(webhook)

    assert deliver(delivery.id) == DeliveryStatus.RETRYING

    delivery.refresh_from_db()
    assert delivery.response_status is None
    assert delivery.last_error.startswith("No answer within 0.2 s")


def test_a_refused_connection_is_retried(make_tenant: Any, make_channel: MakeChannel) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    delivery = _delivery(make_channel(make_tenant().org, ChannelKind.WEBHOOK, f"http://127.0.0.1:{port}/"))

    assert deliver(delivery.id) == DeliveryStatus.RETRYING

    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Connection failed")


def test_a_delivery_already_sent_is_not_sent_again(webhook: Channel, receiver: Receiver) -> None:
    delivery = _delivery(webhook)
    deliver(delivery.id)

    assert deliver(delivery.id) is None
    assert len(receiver.received) == 1


def test_a_delivery_to_a_channel_disabled_since_fails_without_sending(
    webhook: Channel, receiver: Receiver
) -> None:
    delivery = _delivery(webhook)
    Channel.objects.filter(id=webhook.id).update(enabled=False)

    assert deliver(delivery.id) == DeliveryStatus.FAILED
    assert receiver.received == []


def test_the_sweep_sends_what_is_due(webhook: Channel, receiver: Receiver, eager_tasks: None) -> None:
    receiver.answer(500)
    retried = _delivery(webhook, source="budget_event:1")
    sending.attempt(retried.id, now=timezone.now() - timedelta(minutes=1))  # its retry is due now
    lost = _delivery(webhook, source="budget_event:2")  # its first message never reached a worker
    Delivery.objects.filter(id=lost.id).update(created_at=timezone.now() - timedelta(minutes=2))
    fresh = _delivery(webhook, source="budget_event:3")  # queued a moment ago: left to its own task

    assert sending.due() == [retried.id, lost.id]
    assert deliver_due() == 2

    statuses = dict(Delivery.objects.values_list("id", "status"))
    assert statuses == {retried.id: "sent", lost.id: "sent", fresh.id: "pending"}
    assert sending.due() == []


# --- Slack and email --------------------------------------------------------------------------------------


def test_slack_gets_text_and_blocks(make_tenant: Any, make_channel: MakeChannel, receiver: Receiver) -> None:
    channel = make_channel(make_tenant().org, ChannelKind.SLACK, receiver.url)
    delivery = _delivery(channel)

    assert deliver(delivery.id) == DeliveryStatus.SENT

    [request] = receiver.received
    assert "x-costline-signature" not in request.headers
    body = request.json
    assert body["text"] == "Budget Search reached 80%: Budget “Search” reached 80% ($80.00 of $100.00)."
    header, message, fields, actions = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Budget Search reached 80%"}}
    assert message["text"] == {"type": "mrkdwn", "text": EVENT["message"]}
    assert {"type": "mrkdwn", "text": "*Spend usd*\n80.00"} in fields["fields"]
    assert {"type": "mrkdwn", "text": "*Threshold percent*\n80"} in fields["fields"]
    assert actions["elements"][0]["url"] == EVENT["url"]


def test_slack_text_is_escaped_and_fields_capped() -> None:
    payload = {f"k{i}": "<b>&" for i in range(15)}

    body = sending.slack_message("a <script> & " + "x" * 200, payload)

    header, fields = body["blocks"]
    assert len(header["text"]["text"]) == 150
    assert len(fields["fields"]) == 10
    assert fields["fields"][0]["text"] == "*K0*\n&lt;b&gt;&amp;"
    assert body["text"].startswith("a &lt;script&gt; &amp; ")


def test_email_goes_to_every_recipient(make_tenant: Any, make_channel: MakeChannel) -> None:
    channel = make_channel(make_tenant().org, ChannelKind.EMAIL, "ops@example.com, cfo@example.com")
    delivery = _delivery(channel)

    assert deliver(delivery.id) == DeliveryStatus.SENT

    [message] = mail.outbox
    assert message.to == ["ops@example.com", "cfo@example.com"]
    assert message.subject == "Budget Search reached 80%"
    assert EVENT["message"] in message.body
    assert "Spend usd: 80.00" in message.body
    assert f"Open in Costline: {EVENT['url']}" in message.body
