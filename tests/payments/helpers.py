"""Helpers for payments tests: payment methods, funding through the real API path, and
signed webhook deliveries."""

import json
import time

from django.db import transaction

from payments import services
from payments.models import Payment, PaymentMethod
from payments.signatures import sign


def payment_method(user, token: str = "pm_card_visa") -> PaymentMethod:
    return services.payment_method_create(user=user, token=token)


def fund(milestone, token: str = "pm_card_visa") -> Payment:
    """Fund through the service; after-commit work (the processing task) runs inline because
    the tests run Celery eager and use transaction=True or capture on-commit callbacks."""
    homeowner = milestone.project.homeowner
    method = payment_method(homeowner, token)
    payment = services.payment_fund(
        milestone_id=milestone.pk, payment_method_id=method.pk, actor=homeowner
    )
    return Payment.objects.get(pk=payment.pk)


def event_body(event_id: str, type: str, obj: dict, created: int | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": type,
            "created": created or int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


def signed(body: bytes, secret: str = "whsec_sandbox_development", timestamp=None) -> str:
    return sign(body, secret, timestamp)


def post_webhook(client, body: bytes, header: str | None, provider: str = "sandbox"):
    extra = {"HTTP_STRIPE_SIGNATURE": header} if header is not None else {}
    return client.post(
        f"/webhooks/{provider}/", data=body, content_type="application/json", **extra
    )


def in_transaction(fn):
    with transaction.atomic():
        return fn()


class AsgiResponse:
    def __init__(self, status: int, headers: list, content: bytes):
        self.status_code = status
        self.headers = {name.decode().lower(): value.decode() for name, value in headers}
        self.content = content

    def json(self):
        return json.loads(self.content)


class AsgiClient:
    """Calls config.asgi.application the way Daphne does (one http scope, the body in
    `http.request` messages of `chunk` bytes), with the Django test client's post/get, so the
    same tests cover the lean ASGI path of payments.ingest and the Django views."""

    def __init__(self, chunk: int = 64 * 1024):
        self.chunk = chunk

    def post(self, path, data=b"", content_type="application/json", **extra):
        headers = [(b"content-type", content_type.encode())]
        if "CONTENT_LENGTH" in extra:
            headers.append((b"content-length", str(extra.pop("CONTENT_LENGTH")).encode()))
        elif not extra.pop("chunked", False):
            headers.append((b"content-length", str(len(data)).encode()))
        for key, value in extra.items():
            assert key.startswith("HTTP_"), key
            headers.append((key[5:].replace("_", "-").lower().encode(), value.encode()))
        return self.request("POST", path, data, headers)

    def get(self, path):
        return self.request("GET", path, b"", [])

    def request(self, method, path, body, headers) -> AsgiResponse:
        from asgiref.sync import async_to_sync

        return async_to_sync(self._call)(method, path, body, headers)

    async def _call(self, method, path, body, headers) -> AsgiResponse:
        from asgiref.testing import ApplicationCommunicator

        from config.asgi import application

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        communicator = ApplicationCommunicator(application, scope)
        chunks = [body[i : i + self.chunk] for i in range(0, len(body), self.chunk)] or [b""]
        for n, chunk in enumerate(chunks):
            more = n < len(chunks) - 1
            await communicator.send_input(
                {"type": "http.request", "body": chunk, "more_body": more}
            )
        start = await communicator.receive_output(timeout=10)
        assert start["type"] == "http.response.start", start
        content = b""
        while True:
            message = await communicator.receive_output(timeout=10)
            content += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await communicator.wait(timeout=10)
        return AsgiResponse(start["status"], start.get("headers", []), content)
