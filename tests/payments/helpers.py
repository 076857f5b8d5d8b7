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
