"""Driving a payment through the gateway: authorize, 3-D Secure, capture, each call with the
idempotency key derived from the payment, and what each answer does (through
payments.services.intents, the one place a gateway answer changes a payment).

Flow: `payment_fund` (payments/services/funding.py) → after commit `payment_process` in a
Celery task (authorize, then capture when the capture is manual) → `_apply_intent_locked_tx`
(one transaction: lock milestone then payment, intents.apply_intent). Webhooks reach the same
apply_intent, so the synchronous answer and the webhook are each other's backup and whichever
comes second changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import breaker
from payments.calls import BreakerOpen, call_gateway, carry_out, last_outcome, next_attempt_time
from payments.gateways import CardDeclined, GatewayError, IntentResult, get_gateway
from payments.locks import payment_for_update
from payments.models import GatewayAttempt, Payment
from payments.services.intents import _to_failure, apply_intent, transition, verification_deadline

logger = logging.getLogger(__name__)
Status = Payment.Status


@dataclass(frozen=True)
class Progress:
    """What a processing run left behind: the status, and when to run again (if ever)."""

    status: str
    retry_at: datetime | None = None


def authorize_key(payment: Payment) -> str:
    return f"payment:{payment.pk}:authorize"


def capture_key(payment: Payment) -> str:
    return f"payment:{payment.pk}:capture"


def cancel_key(payment: Payment) -> str:
    return f"payment:{payment.pk}:cancel"


def _call(payment: Payment, operation: str, key: str, fn):
    """One gateway call for `payment` (payments.calls.call_gateway: breaker, attempt row)."""
    return call_gateway(
        provider=payment.provider, operation=operation, idempotency_key=key, payment=payment, fn=fn
    )


def payment_process(*, payment_id: int) -> Progress | None:
    """Drive a payment through the gateway as far as it can go now. Idempotent: each gateway
    call uses the key derived from the payment, so a rerun after a crash (even after the
    gateway acted) gets the first answer back and nothing is charged twice.

    Transient errors defer the payment (next_attempt_at); declines fail it; an unknown outcome
    (timeout) is resolved with the same idempotency key before anything else. Returns None
    for a payment that does not exist."""
    payment = Payment.objects.filter(pk=payment_id).first()
    if payment is None:
        return None
    gateway = get_gateway(payment.provider)
    if payment.status == Status.INITIATED:
        state = breaker.store().get(f"{payment.provider}:authorize")
        if state["state"] == breaker.OPEN and (state["retry_at"] or 0) > timezone.now().timestamp():
            return _defer(
                payment.pk, BreakerOpen(f"{payment.provider}:authorize", state["retry_at"])
            )
        payment = _claim(payment.pk)
    if payment.status == Status.PROCESSING:
        progress = _authorize(payment, gateway)
        if progress is not None:
            return progress
        payment.refresh_from_db()
    if payment.status == Status.VERIFYING:
        progress = _verification_check(payment, gateway)
        if progress is not None:
            return progress
        payment.refresh_from_db()
    if payment.status == Status.AUTHORIZED and payment.capture_method == "manual":
        progress = _capture(payment, gateway)
        if progress is not None:
            return progress
        payment.refresh_from_db()
    return Progress(payment.status)


def _claim(payment_id: int) -> Payment:
    with transaction.atomic():
        payment = payment_for_update(payment_id=payment_id, with_milestone=False)
        if payment.status == Status.INITIATED:
            transition(payment, to=Status.PROCESSING)
            Payment.objects.filter(pk=payment.pk).update(next_attempt_at=None)
    return payment


def _authorize(payment: Payment, gateway) -> Progress | None:
    key = authorize_key(payment)
    try:
        intent = None
        if last_outcome(key) == GatewayAttempt.Outcome.UNKNOWN:
            intent = _resolve(payment, gateway, key)
        if intent is None:
            method = payment.payment_method
            intent = _call(
                payment,
                GatewayAttempt.Operation.AUTHORIZE,
                key,
                lambda: gateway.create_payment(
                    amount=payment.amount,
                    currency=payment.currency,
                    payment_method=method.token if method else "",
                    customer=method.customer_id if method else "",
                    capture_method=payment.capture_method,
                    metadata={
                        "payment_id": payment.pk,
                        "milestone_id": payment.milestone_id,
                        "project_id": payment.project_id,
                    },
                    idempotency_key=key,
                ),
            )
    except CardDeclined as exc:
        return _fail(
            payment.pk,
            code=exc.code,
            message=exc.message,
            gateway_id=getattr(exc, "payment_id", ""),
        )
    except GatewayError as exc:
        if exc.transient:
            return _defer(payment.pk, exc)
        return _fail(payment.pk, code=exc.code, message=exc.message)
    return _go_on(payment.pk, intent)


def _resolve(payment: Payment, gateway, key: str) -> IntentResult | None:
    """The last call with this key timed out: ask the gateway what became of it before
    anything is sent again. Gateways that cannot look a key up (Stripe) answer None, and the
    request is then repeated with the same key, which Stripe answers with the first result."""
    lookup = getattr(gateway, "lookup_payment", None)
    if lookup is None:
        return None
    return _call(
        payment,
        GatewayAttempt.Operation.RETRIEVE,
        key,
        lambda: lookup(idempotency_key=key),
    )


def _verification_check(payment: Payment, gateway) -> Progress | None:
    """A payment waiting for the card holder's 3-D Secure: until its deadline, nothing to do
    (the next run is at the deadline). After it, ask the gateway first (the challenge may have
    been finished or failed and the webhook lost) and apply that; if it is still waiting,
    cancel the intent at the gateway, then apply the cancelled intent (payment cancelled,
    milestone pending, both parties told). The gateway is asked before anything changes here,
    so a challenge finished at the last moment is never cancelled locally while the gateway
    took the money; a cancel the gateway refuses means the intent moved on: apply what it is."""
    deadline = payment.next_attempt_at or verification_deadline(payment.updated_at)
    if deadline > timezone.now() or not payment.gateway_payment_id:
        return Progress(payment.status, deadline)
    try:
        current = _call(
            payment,
            GatewayAttempt.Operation.RETRIEVE,
            f"payment:{payment.pk}:retrieve",
            lambda: gateway.retrieve_payment(payment_id=payment.gateway_payment_id),
        )
        if current.status == "requires_action":
            key = cancel_key(payment)
            current = _call(
                payment,
                GatewayAttempt.Operation.CANCEL,
                key,
                lambda: gateway.cancel_payment(
                    payment_id=payment.gateway_payment_id, idempotency_key=key
                ),
            )
    except GatewayError as exc:
        if exc.transient:
            return _defer(payment.pk, exc)
        current = _retrieve(payment, gateway)
        if current is None:
            return _defer(payment.pk, exc)
    return _go_on(payment.pk, current)


def _capture(payment: Payment, gateway) -> Progress | None:
    key = capture_key(payment)
    return carry_out(
        lambda: _call(
            payment,
            GatewayAttempt.Operation.CAPTURE,
            key,
            lambda: gateway.capture_payment(
                payment_id=payment.gateway_payment_id, idempotency_key=key
            ),
        ),
        applied=lambda intent: _go_on(payment.pk, intent),
        deferred=lambda exc: _defer(payment.pk, exc),
        refused=lambda exc: _capture_refused(payment, gateway, exc),
    )


def _capture_refused(payment: Payment, gateway, exc: GatewayError) -> Progress | None:
    """A refused capture may only mean the gateway is already past it (captured by an earlier
    attempt whose answer we lost under another key, or automatically): ask what the payment
    is before declaring it declined."""
    current = _retrieve(payment, gateway)
    if current is not None and current.status == "succeeded":
        return _go_on(payment.pk, current)
    return _fail(payment.pk, code=exc.code, message=exc.message)


def _retrieve(payment: Payment, gateway) -> IntentResult | None:
    try:
        return _call(
            payment,
            GatewayAttempt.Operation.RETRIEVE,
            f"payment:{payment.pk}:retrieve",
            lambda: gateway.retrieve_payment(payment_id=payment.gateway_payment_id),
        )
    except GatewayError:
        return None


def _defer(payment_id: int, error: GatewayError) -> Progress:
    """Schedule the next attempt; give up (failed, gateway_unavailable) after the maximum."""
    with transaction.atomic():
        payment = payment_for_update(payment_id=payment_id)
        if payment.status not in Payment.OPEN:
            return Progress(payment.status)
        sent = not isinstance(error, BreakerOpen)
        attempts = payment.attempt_count + (1 if sent else 0)
        if sent and attempts >= settings.PAYMENTS_RETRY_MAX_ATTEMPTS:
            _to_failure(payment, code="gateway_unavailable", message=error.message)
            return Progress(payment.status)
        retry_at = next_attempt_time(attempts, error)
        Payment.objects.filter(pk=payment.pk).update(
            attempt_count=attempts, next_attempt_at=retry_at, updated_at=timezone.now()
        )
    logger.info(
        "payment deferred",
        extra={"payment_id": payment_id, "error": error.code, "retry_at": retry_at.isoformat()},
    )
    return Progress(payment.status, retry_at)


def _fail(payment_id: int, *, code: str, message: str, gateway_id: str = "") -> Progress:
    with transaction.atomic():
        payment = payment_for_update(payment_id=payment_id)
        if gateway_id and not payment.gateway_payment_id:
            payment.gateway_payment_id = gateway_id
            payment.save(update_fields=["gateway_payment_id"])
        if payment.status in Payment.OPEN:
            _to_failure(payment, code=code, message=message)
    return Progress(payment.status)


def _go_on(payment_id: int, intent: IntentResult) -> None:
    """Apply what the gateway answered; None: payment_process goes on from the new status."""
    _apply_intent_locked_tx(payment_id, intent, followup=False)


def _apply_intent_locked_tx(payment_id: int, intent: IntentResult, *, followup: bool) -> bool:
    with transaction.atomic():
        payment = payment_for_update(payment_id=payment_id)
        return apply_intent(payment, intent, followup=followup)


def payment_cancel_at_gateway(*, payment_id: int) -> None:
    """Release the authorization of a cancelled payment, or close the intent of a rejected
    one (failed 3-D Secure), at the gateway (best effort)."""
    payment = Payment.objects.filter(
        pk=payment_id, status__in=[Status.CANCELLED, Status.REJECTED]
    ).first()
    if payment is None or not payment.gateway_payment_id:
        return
    gateway = get_gateway(payment.provider)
    key = cancel_key(payment)
    _call(
        payment,
        GatewayAttempt.Operation.CANCEL,
        key,
        lambda: gateway.cancel_payment(payment_id=payment.gateway_payment_id, idempotency_key=key),
    )
