"""Sending one Delivery to its channel: email, signed JSON webhook or Slack, retried with back-off.

`attempt(delivery_id)` is what the `costline.notifications.deliver` task runs. It first claims the
delivery with a conditional UPDATE (pending or retrying, and due), moving `next_attempt_at` a lease
ahead: two workers given the same delivery (a redelivered message, the periodic sweep) never send it at
once, a delivery already sent is never sent again, and one whose worker died mid-send becomes due again
when the lease ends. Then it sends once and records the outcome on the row: `attempts`, `status`,
`response_status`, `last_error`, `next_attempt_at` (the retry's time) or `sent_at`.

Which failures are retried: 5xx, 429 (not before its Retry-After), timeouts and connection errors, SMTP
errors. Any other 4xx, a redirect, or an unusable URL fails at once: sending again would not help.

Webhook requests carry `X-Costline-Timestamp` (epoch seconds) and `X-Costline-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the channel's signing secret>`; a receiver
recomputes it over the raw body and rejects old timestamps (replays). `X-Costline-Delivery` is the
delivery id, the same on every retry, for a receiver to drop duplicates.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import secrets
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db.models import Q
from django.utils import timezone

from costline.alerts.models import Channel, ChannelKind, Delivery, DeliveryStatus

log = logging.getLogger(__name__)

# The wait before retry n (1-based): 30 s, 2 min, 8 min, 30 min, 2 h; six attempts in all, over about
# 2 h 40 min, long enough to outlast a receiver's deployment or short outage.
BACKOFF = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=8),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
TIMEOUT_SECONDS = 10.0
# A claimed delivery is due again after this: longer than a send can take (10 s per connect, write
# and read, or SMTP operation), so only a worker that died leaves it to the sweep.
LEASE = timedelta(minutes=2)
# A Retry-After beyond this is capped: the delivery is still worth sending later rather than dropped.
RETRY_AFTER_MAX = timedelta(hours=6)
ERROR_MAX_CHARS = 500
USER_AGENT = "Costline-Notifications/1"
SIGNATURE_HEADER = "X-Costline-Signature"
TIMESTAMP_HEADER = "X-Costline-Timestamp"


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (epoch seconds, as sent)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class Outcome:
    sent: bool
    retry: bool = False  # a failure worth retrying
    response_status: int | None = None
    error: str = ""
    retry_after: timedelta | None = None  # the receiver's Retry-After, when it gave one


# --- The attempt ---------------------------------------------------------------------------------------


def attempt(delivery_id: int, now: datetime | None = None) -> str | None:
    """Send a due delivery once and record the outcome; its status after, or None when not claimed.

    Not claimed: already sent or failed, not due yet, being sent by another worker, or deleted.
    `now` is the clock (tests pass the scheduled retry time to follow the back-off without waiting).
    """
    now = now or timezone.now()
    claimed = (
        Delivery.objects.filter(id=delivery_id, status__in=(DeliveryStatus.PENDING, DeliveryStatus.RETRYING))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=now + LEASE)
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("channel").get(id=delivery_id)
    outcome = send(delivery.channel, delivery)
    _record(delivery, outcome, now)
    log.info(
        "delivery %s to channel %s (%s), attempt %d: %s%s",
        delivery.id,
        delivery.channel_id,
        delivery.channel.kind,
        delivery.attempts,
        delivery.status,
        f" ({delivery.last_error})" if delivery.last_error else "",
    )
    return delivery.status


def _record(delivery: Delivery, outcome: Outcome, now: datetime) -> None:
    delivery.attempts += 1
    delivery.response_status = outcome.response_status
    delivery.last_error = outcome.error[:ERROR_MAX_CHARS]
    if outcome.sent:
        delivery.status = DeliveryStatus.SENT
        delivery.sent_at = now
        delivery.next_attempt_at = None
    elif outcome.retry and delivery.attempts < MAX_ATTEMPTS:
        wait = BACKOFF[delivery.attempts - 1]
        if outcome.retry_after is not None:
            wait = max(wait, min(outcome.retry_after, RETRY_AFTER_MAX))
        delivery.status = DeliveryStatus.RETRYING
        delivery.next_attempt_at = now + wait
    else:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        if outcome.retry:
            delivery.last_error = f"Gave up after {delivery.attempts} attempts: {delivery.last_error}"[
                :ERROR_MAX_CHARS
            ]
    delivery.save(
        update_fields=["attempts", "response_status", "last_error", "status", "sent_at", "next_attempt_at"]
    )


def due(now: datetime | None = None, limit: int = 500) -> list[int]:
    """Deliveries whose retry is due, or whose first sending was never started (a lost queue message)."""
    now = now or timezone.now()
    return list(
        Delivery.objects.filter(status__in=(DeliveryStatus.PENDING, DeliveryStatus.RETRYING))
        .filter(
            Q(next_attempt_at__lte=now)
            | Q(next_attempt_at__isnull=True, created_at__lte=now - timedelta(minutes=1))
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


# --- Sending ---------------------------------------------------------------------------------------------


def send(channel: Channel, delivery: Delivery) -> Outcome:
    """Send once; every failure is an Outcome (a bug in here still raises)."""
    if not channel.enabled:
        return Outcome(sent=False, error="The channel was disabled before this was sent.")
    if channel.kind == ChannelKind.EMAIL:
        return _send_email(channel, delivery)
    if channel.kind == ChannelKind.WEBHOOK:
        body = _json(delivery.payload)
        timestamp = str(int(time.time()))
        headers = {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(channel.signing_secret, timestamp, body),
            "X-Costline-Delivery": str(delivery.id),
        }
        return _post(channel.target, body, headers)
    if channel.kind == ChannelKind.SLACK:
        return _post(channel.target, _json(slack_message(delivery.subject, delivery.payload)), {})
    raise ValueError(f"unknown channel kind {channel.kind!r}")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=TIMEOUT_SECONDS,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Outcome(sent=False, error=f"The URL cannot be used: {exc}")
    except httpx.TimeoutException as exc:
        return Outcome(sent=False, retry=True, error=f"No answer within {TIMEOUT_SECONDS:g} s ({exc!r})")
    except httpx.TransportError as exc:
        return Outcome(sent=False, retry=True, error=f"Connection failed: {exc or type(exc).__name__}")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(sent=True, response_status=status)
    answer = f"HTTP {status}: {response.text[:300]}".strip()
    if status == 429 or status >= 500:
        return Outcome(
            sent=False,
            retry=True,
            response_status=status,
            error=answer,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if 300 <= status < 400:
        answer = f"HTTP {status} redirect to {response.headers.get('Location', '?')}: use that URL instead"
    return Outcome(sent=False, response_status=status, error=answer)


def _retry_after(value: str | None) -> timedelta | None:
    """Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - timezone.now(), timedelta(0))


def _send_email(channel: Channel, delivery: Delivery) -> Outcome:
    recipients = recipients_of(channel.target)
    message = EmailMessage(
        subject=delivery.subject,
        body=email_text(delivery.subject, delivery.payload),
        to=recipients,
        connection=get_connection(timeout=TIMEOUT_SECONDS),
    )
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome(sent=False, error=f"Every recipient was refused: {', '.join(exc.recipients)}")
    except (smtplib.SMTPException, OSError) as exc:  # server down, timeout, temporary refusal
        return Outcome(sent=False, retry=True, error=f"Sending the email failed: {exc!r}")
    return Outcome(sent=True)


def recipients_of(target: str) -> list[str]:
    return [address.strip() for address in target.split(",") if address.strip()]


# --- Rendering ---------------------------------------------------------------------------------------------

# Keys a payload may carry that the renderings treat specially; the other scalar keys become fields.
MESSAGE_KEY = "message"
URL_KEY = "url"
SLACK_MAX_FIELDS = 10  # Slack's limit on a section's fields
SLACK_HEADER_MAX_CHARS = 150  # Slack's limit on a header block's text


def _fields(payload: dict[str, Any]) -> list[tuple[str, str]]:
    fields = []
    for key, value in payload.items():
        if key in (MESSAGE_KEY, URL_KEY) or value is None:
            continue
        label = key.replace("_", " ").capitalize()
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        fields.append((label, text))
    return fields


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An incoming-webhook body: `text` (notifications, clients without blocks) and Block Kit blocks."""
    header = (
        subject if len(subject) <= SLACK_HEADER_MAX_CHARS else subject[: SLACK_HEADER_MAX_CHARS - 1] + "…"
    )
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header}}]
    if payload.get(MESSAGE_KEY):
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(str(payload[MESSAGE_KEY]))}}
        )
    fields = _fields(payload)[:SLACK_MAX_FIELDS]
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_slack_escape(label)}*\n{_slack_escape(value)}"}
                    for label, value in fields
                ],
            }
        )
    if isinstance(payload.get(URL_KEY), str) and payload[URL_KEY].startswith(("http://", "https://")):
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Costline"},
                        "url": payload[URL_KEY],
                    }
                ],
            }
        )
    text = subject
    if payload.get(MESSAGE_KEY):
        text = f"{subject}: {payload[MESSAGE_KEY]}"
    return {"text": _slack_escape(text), "blocks": blocks}


def email_text(subject: str, payload: dict[str, Any]) -> str:
    lines = [subject, ""]
    if payload.get(MESSAGE_KEY):
        lines += [str(payload[MESSAGE_KEY]), ""]
    lines += [f"{label}: {value}" for label, value in _fields(payload)]
    if payload.get(URL_KEY):
        lines += ["", f"Open in Costline: {payload[URL_KEY]}"]
    lines += ["", "-- ", f"Sent by Costline ({settings.SITE_URL}) to this notification channel."]
    return "\n".join(lines) + "\n"
