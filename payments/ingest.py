"""Incoming gateway webhooks, answered by one function for both ways in.

`answer()` is the whole decision: verify, one INSERT, one enqueue (payments.services.webhooks)
and the status and JSON body to send back. Two transports call it:

- `asgi_app`, which `config.asgi` mounts in front of Django for exactly /webhooks/stripe/ and
  /webhooks/sandbox/. It skips Django's request and response objects, the middleware chain and
  the URL resolver, which cost more than the rest of the delivery together (measured in
  docs/PERFORMANCE.md), and runs the database work in a worker thread. No session, no CSRF, no
  authentication: the signature is the authentication.
- the Django views in payments/views.py (the test client, `runserver`, and any server that does
  not use config.asgi), with the same answers.
"""

import json
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from common.api.exceptions import error_body
from payments.exceptions import WebhookRejected
from payments.services.webhooks import webhook_receive

logger = logging.getLogger(__name__)

PATHS = {"/webhooks/stripe/": "stripe", "/webhooks/sandbox/": "sandbox"}

OK = b'{"received":true}'
DUPLICATE = b'{"received":true,"duplicate":true}'


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps(error_body(code, message)).encode()


NOT_ALLOWED = _error(405, "method_not_allowed", "POST only.")
TOO_LARGE = _error(400, "webhook_rejected", "The body is too large.")


def too_large(content_length: str | None) -> bool:
    """Whether a declared Content-Length is over the limit (checked before reading a byte)."""
    try:
        return int(content_length or 0) > settings.PAYMENTS_WEBHOOK_MAX_BYTES
    except ValueError:
        return False


def answer(*, provider: str, body: bytes, signature: str | None) -> tuple[int, bytes]:
    """(status, JSON body) for one delivery: 200 once stored (or a duplicate), 400 with nothing
    stored for anything not signed correctly or not an event."""
    try:
        _, created = webhook_receive(provider=provider, body=body, signature_header=signature)
    except WebhookRejected as exc:
        return _error(400, exc.code, exc.message)
    return 200, OK if created else DUPLICATE


def _answer_in_thread(provider: str, body: bytes, signature: str | None) -> tuple[int, bytes]:
    # As Django does around each request: a connection goes back to the pool (CONN_MAX_AGE=0)
    # or is dropped when broken, so a worker thread never keeps one between deliveries.
    close_old_connections()
    try:
        return answer(provider=provider, body=body, signature=signature)
    except Exception:
        logger.exception("webhook ingest failed", extra={"provider": provider})
        return _error(500, "server_error", "The delivery could not be stored; send it again.")
    finally:
        close_old_connections()


_answer_async = sync_to_async(_answer_in_thread, thread_sensitive=False)

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


async def asgi_app(scope, receive, send) -> None:
    """The ASGI side of `answer()`, for an http scope whose path is in PATHS."""
    provider = PATHS[scope["path"]]
    headers = dict(scope.get("headers") or [])
    if scope["method"] != "POST":
        status, payload = NOT_ALLOWED
    elif too_large(headers.get(b"content-length", b"").decode("latin-1")):
        status, payload = TOO_LARGE
    else:
        body = await _read_body(receive, settings.PAYMENTS_WEBHOOK_MAX_BYTES)
        if body is None:
            status, payload = TOO_LARGE
        else:
            signature = headers.get(b"stripe-signature")
            status, payload = await _answer_async(
                provider, body, signature.decode("latin-1") if signature is not None else None
            )
    extra = [(b"allow", b"POST")] if status == 405 else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes `limit` (the rest is never buffered) or
    the client goes away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
