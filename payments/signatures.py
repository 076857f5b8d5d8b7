"""Incoming gateway webhooks: the signature check of CONTRACT.md and the event shape.

`Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`. Rejected: no
header, no or non-integer `t`, `t` more than the tolerance (300 s) away from now in either
direction, no `v1` matching any configured secret. Several `v1` entries are allowed and any
matching one is accepted, and several secrets can be configured, so a secret can be rotated
without losing deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from django.conf import settings

from payments.exceptions import WebhookRejected

TOLERANCE_SECONDS = 300


def secrets_for(provider: str) -> list[str]:
    """The current secret and the previous ones still accepted during a rotation."""
    if provider == "stripe":
        current, previous = settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_WEBHOOK_SECRETS_PREVIOUS
    elif provider == "sandbox":
        current = settings.SANDBOX_WEBHOOK_SECRET
        previous = settings.SANDBOX_WEBHOOK_SECRETS_PREVIOUS
    else:
        return []
    values = [*current.split(","), *previous]
    return [value.strip() for value in values if value and value.strip()]


def verify(
    *, body: bytes, header: str | None, secrets: list[str], now: float | None = None
) -> None:
    """Raise WebhookRejected unless the header signs this body with one of the secrets."""
    if not header:
        raise WebhookRejected("Missing Stripe-Signature header.")
    if not secrets:
        raise WebhookRejected("No webhook secret is configured for this endpoint.")
    timestamp = None
    candidates = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected("The signature has no valid timestamp.")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise WebhookRejected("The signature's timestamp is outside the tolerance.")
    if not candidates:
        raise WebhookRejected("The signature has no v1 entry.")
    signed = timestamp.encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return
    raise WebhookRejected("No signature matches.")


def parse_event(body: bytes) -> dict:
    """The body as an event: a JSON object with string `id` and `type` and `data.object`."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected("The body is not JSON.") from exc
    if not isinstance(event, dict):
        raise WebhookRejected("The body is not a JSON event.")
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 255:
        raise WebhookRejected("The event has no valid id.")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        raise WebhookRejected("The event has no valid type.")
    if event.get("object", "event") != "event":
        raise WebhookRejected("The body is not an event.")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise WebhookRejected("The event has no data.object.")
    return event


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """A header as a gateway would send it (the sandbox, the tests and the benchmark use it)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
