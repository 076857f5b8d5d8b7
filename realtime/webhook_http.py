"""The wire side of outgoing webhooks: Standard Webhooks signing, the payload, the target
address guard and the HTTP POST (with timeouts, no redirects, no proxies)."""

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from realtime.exceptions import WebhookTargetRefused

SECRET_PREFIX = "whsec_"


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, the key being the secret's
    base64-decoded bytes (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> dict:
    """Headers for one attempt; during a rotation overlap both secrets sign, space-separated,
    so a receiver holding either secret verifies."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "escrowpay-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
            for secret in secrets_
        ),
    }


def payload(event) -> bytes:
    return json.dumps(
        {
            "id": event.position,
            "type": event.type,
            "timestamp": event.timestamp,
            "resource": {"type": event.aggregate_type, "id": event.aggregate_id},
            "sequence": event.sequence,
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def message_id(event) -> str:
    return f"evt_{event.position}"


def target_check(url: str, *, allow_private: bool, must_resolve: bool = True) -> None:
    """Refuse anything but http(s) to a public address (unless `allow_private`).

    Checked when the endpoint is saved and again before each attempt, since DNS can change.
    When saving, a name that does not resolve (yet) is accepted (`must_resolve=False`); the
    attempt refuses it until it resolves to a public address."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookTargetRefused("The webhook URL must be an http or https URL.")
    if parts.username or parts.password:
        raise WebhookTargetRefused("The webhook URL must not carry credentials.")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        if not must_resolve:
            return
        raise WebhookTargetRefused("The webhook URL's host does not resolve.") from exc
    for *_, sockaddr in addresses:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise WebhookTargetRefused("The webhook URL must point to a public address.")


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    error: str
    response_excerpt: str
    duration_ms: int

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def post(*, url: str, body: bytes, headers: dict, timeout: float) -> PostResult:
    """POST once. Never raises for network or HTTP errors: they are the result."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    started = time.monotonic()
    status_code, error, excerpt = None, "", ""
    try:
        with _opener.open(request, timeout=timeout) as response:
            status_code = response.status
            excerpt = response.read(500).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status_code = exc.code
        error = f"HTTP {exc.code}"
        try:
            excerpt = exc.read(500).decode("utf-8", "replace")
        except OSError:
            excerpt = ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        error = f"{type(exc).__name__}: {reason}"[:300]
    duration_ms = int((time.monotonic() - started) * 1000)
    return PostResult(status_code, error, excerpt, duration_ms)
