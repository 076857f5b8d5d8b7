"""Funding a milestone: the payment, its gateway calls, and what each gateway answer does.

Flow: `payment_fund` (one transaction: escrow's pending → funding, the Payment row,
payment.started) → after commit `payment_process` in a Celery task (authorize, then capture
when the capture is manual) → `_apply_intent` (one transaction: lock milestone then payment,
move forward only, on completion escrow.services.milestone_funded posts the ledger, on failure
milestone_funding_failed). Webhooks reach the same `_apply_intent`, so the synchronous answer
and the webhook are each other's backup and whichever comes second changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from escrow import money
from escrow import services as escrow_services
from escrow.exceptions import FundingMismatch, IllegalTransition
from payments import breaker
from payments.calls import BreakerOpen, call_gateway, last_outcome, next_attempt_time
from payments.exceptions import FundingInProgress, PaymentMethodInvalid
from payments.gateways import CardDeclined, GatewayError, IntentResult, get_gateway
from payments.locks import payment_for_update
from payments.models import GatewayAttempt, Payment, PaymentMethod
from payments.services._events import emit_payment

if TYPE_CHECKING:
    from accounts.models import User

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


def high_priority_threshold(currency: str) -> int:
    """The amount, in `currency`'s minor units, above which a funding payment is high priority.

    The one place the threshold is read: a per-currency amount from
    PAYMENTS_HIGH_PRIORITY_AMOUNTS if set, else PAYMENTS_HIGH_PRIORITY_AMOUNT (minor units of a
    two-decimal currency) scaled by the currency's exponent, so 1,000,000 means 10,000.00 USD,
    10,000 JPY and 10,000.000 KWD rather than the same count of minor units in each."""
    per_currency = settings.PAYMENTS_HIGH_PRIORITY_AMOUNTS.get(currency)
    if per_currency is not None:
        return per_currency
    scale = Decimal(10) ** (money.CURRENCY_EXPONENTS.get(currency, 2) - 2)
    return int(Decimal(settings.PAYMENTS_HIGH_PRIORITY_AMOUNT) * scale)


def is_high_priority(amount: int, currency: str) -> bool:
    return amount > high_priority_threshold(currency)


def transition(payment: Payment, *, to: str, also: list[str] = ()) -> str:
    """Move a locked payment along the table (saving the `also` fields in the same UPDATE) and
    emit payment.status_updated. Caller holds the payment's lock. Returns the previous status.

    Entering verifying starts the 3-D Secure clock (next_attempt_at = the time the challenge
    is given up); leaving it forgets the challenge (next action, client secret, clock)."""
    previous = payment.status
    if to not in Payment.TRANSITIONS[previous]:
        raise IllegalTransition(obj_name=f"Payment {payment.pk}", current=previous, target=to)
    also = list(also)
    if to == Status.VERIFYING:
        payment.next_attempt_at = verification_deadline(timezone.now())
        also.append("next_attempt_at")
    elif previous == Status.VERIFYING:
        payment.next_action = {}
        payment.gateway_client_secret = ""
        payment.next_attempt_at = None
        also += ["next_action", "gateway_client_secret", "next_attempt_at"]
    payment.status = to
    payment.save(update_fields=sorted({"status", "updated_at", *also}))
    emit_payment("payment.status_updated", payment, previous_status=previous, new_status=to)
    return previous


ABANDONED_CODE = "authentication_abandoned"


def verification_deadline(since: datetime) -> datetime:
    return since + timedelta(seconds=settings.PAYMENTS_VERIFICATION_TIMEOUT_SECONDS)


def _abandoned_message() -> str:
    minutes = round(settings.PAYMENTS_VERIFICATION_TIMEOUT_SECONDS / 60)
    return (
        f"The card holder did not finish the 3-D Secure check within {minutes} minutes; the "
        "payment was cancelled and the milestone can be funded again."
    )[:255]


def payment_fund(*, milestone_id: int, payment_method_id: int, actor: User) -> Payment:
    """Start paying for a milestone with one of the actor's payment methods.

    Caller: the project's homeowner. In one transaction: escrow's milestone pending → funding,
    the Payment (initiated) and payment.started; the gateway is called after commit by a task
    (the "high" queue above PAYMENTS_HIGH_PRIORITY_AMOUNT). While the gateway's breaker is
    open the payment is accepted and waits (initiated, with a next attempt time).
    Raises PaymentMethodInvalid (400), MilestoneNotFound (404), NotAllowed (403),
    ProjectNotActive and IllegalTransition (409), FundingInProgress (409).
    """
    method = (
        PaymentMethod.objects.filter(pk=payment_method_id, user=actor)
        .exclude(status=PaymentMethod.Status.REMOVED)
        .first()
    )
    if method is None:
        raise PaymentMethodInvalid("No such payment method.")
    if method.status != PaymentMethod.Status.VERIFIED:
        raise PaymentMethodInvalid(f"The payment method is {method.status}.")
    with transaction.atomic(durable=True):
        milestone = escrow_services.milestone_fund_start(milestone_id=milestone_id, actor=actor)
        project = milestone.project
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    milestone=milestone,
                    project=project,
                    payer_id=project.homeowner_id,
                    payee_id=project.contractor_id,
                    payment_method=method,
                    provider=method.provider,
                    amount=milestone.amount,
                    currency=project.currency,
                    capture_method=settings.PAYMENTS_CAPTURE_METHOD,
                    is_high_priority=is_high_priority(milestone.amount, project.currency),
                )
        except IntegrityError as exc:
            raise FundingInProgress() from exc
        emit_payment("payment.started", payment, payment_method_id=method.pk)
        transaction.on_commit(lambda: enqueue_process(payment))
    return payment


def enqueue_process(payment: Payment, *, countdown: float | None = None) -> None:
    from payments.tasks import payment_process_task

    queue = "high" if payment.is_high_priority else "default"
    payment_process_task.apply_async(args=[payment.pk], queue=queue, countdown=countdown)


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
            intent = call_gateway(
                provider=payment.provider,
                operation=GatewayAttempt.Operation.AUTHORIZE,
                idempotency_key=key,
                payment=payment,
                fn=lambda: gateway.create_payment(
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
    _apply_intent_locked_tx(payment.pk, intent, followup=False)
    return None


def _resolve(payment: Payment, gateway, key: str) -> IntentResult | None:
    """The last call with this key timed out: ask the gateway what became of it before
    anything is sent again. Gateways that cannot look a key up (Stripe) answer None, and the
    request is then repeated with the same key, which Stripe answers with the first result."""
    lookup = getattr(gateway, "lookup_payment", None)
    if lookup is None:
        return None
    return call_gateway(
        provider=payment.provider,
        operation=GatewayAttempt.Operation.RETRIEVE,
        idempotency_key=key,
        payment=payment,
        fn=lambda: lookup(idempotency_key=key),
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
        current = call_gateway(
            provider=payment.provider,
            operation=GatewayAttempt.Operation.RETRIEVE,
            idempotency_key=f"payment:{payment.pk}:retrieve",
            payment=payment,
            fn=lambda: gateway.retrieve_payment(payment_id=payment.gateway_payment_id),
        )
        if current.status == "requires_action":
            key = cancel_key(payment)
            current = call_gateway(
                provider=payment.provider,
                operation=GatewayAttempt.Operation.CANCEL,
                idempotency_key=key,
                payment=payment,
                fn=lambda: gateway.cancel_payment(
                    payment_id=payment.gateway_payment_id, idempotency_key=key
                ),
            )
    except GatewayError as exc:
        if exc.transient:
            return _defer(payment.pk, exc)
        current = _retrieve(payment, gateway)
        if current is None:
            return _defer(payment.pk, exc)
    _apply_intent_locked_tx(payment.pk, current, followup=False)
    return None


def _capture(payment: Payment, gateway) -> Progress | None:
    key = capture_key(payment)
    try:
        intent = call_gateway(
            provider=payment.provider,
            operation=GatewayAttempt.Operation.CAPTURE,
            idempotency_key=key,
            payment=payment,
            fn=lambda: gateway.capture_payment(
                payment_id=payment.gateway_payment_id, idempotency_key=key
            ),
        )
    except GatewayError as exc:
        if exc.transient:
            return _defer(payment.pk, exc)
        # A refused capture may only mean the gateway is already past it (captured by an
        # earlier attempt whose answer we lost under another key, or automatically): ask what
        # the payment is before declaring it declined.
        current = _retrieve(payment, gateway)
        if current is not None and current.status == "succeeded":
            _apply_intent_locked_tx(payment.pk, current, followup=False)
            return None
        return _fail(payment.pk, code=exc.code, message=exc.message)
    _apply_intent_locked_tx(payment.pk, intent, followup=False)
    return None


def _retrieve(payment: Payment, gateway) -> IntentResult | None:
    try:
        return call_gateway(
            provider=payment.provider,
            operation=GatewayAttempt.Operation.RETRIEVE,
            idempotency_key=f"payment:{payment.pk}:retrieve",
            payment=payment,
            fn=lambda: gateway.retrieve_payment(payment_id=payment.gateway_payment_id),
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


def _failure_status(current: str) -> str:
    return {
        Status.INITIATED: Status.CANCELLED,
        Status.PROCESSING: Status.FAILED,
        Status.VERIFYING: Status.REJECTED,
        Status.AUTHORIZED: Status.DECLINED,
    }[current]


def _to_failure(payment: Payment, *, code: str, message: str, to: str | None = None) -> None:
    """Caller holds the milestone and payment locks."""
    payment.failure_code = (code or "payment_failed")[:64]
    payment.failure_message = (message or "")[:255]
    payment.next_attempt_at = None
    payment.save(update_fields=["failure_code", "failure_message", "next_attempt_at"])
    previous = transition(payment, to=to or _failure_status(payment.status))
    escrow_services.milestone_funding_failed(milestone_id=payment.milestone_id)
    # The reason in words for both parties (the gateway's decline message, or ours for an
    # abandoned 3-D Secure check); never card data.
    emit_payment("payment.failed", payment, failure_message=payment.failure_message or None)
    if previous == Status.VERIFYING and payment.status == Status.REJECTED:
        # A failed challenge leaves the intent open at the gateway (Stripe: requires a new
        # payment method), and its client secret could still confirm it with another card
        # while our payment is over: close it.
        payment_id = payment.pk
        transaction.on_commit(lambda: _cancel_at_gateway(payment_id))


def target_status(current: str, intent: IntentResult) -> str | None:
    """Our status for a gateway status (Stripe's vocabulary), given where we are."""
    status = intent.status
    if status in ("requires_confirmation", "processing"):
        return Status.PROCESSING
    if status == "requires_payment_method":
        if intent.failure_code or intent.failure_message:
            return _failure_status(current) if current in Payment.OPEN else None
        return Status.PROCESSING
    if status == "requires_action":
        return Status.VERIFYING
    if status == "requires_capture":
        return Status.AUTHORIZED
    if status == "succeeded":
        return Status.COMPLETED
    if status == "canceled":
        if current == Status.VERIFYING:
            return Status.CANCELLED  # the challenge was given up, not failed
        return _failure_status(current) if current in Payment.OPEN else None
    return None


def _apply_intent_locked_tx(payment_id: int, intent: IntentResult, *, followup: bool) -> bool:
    with transaction.atomic():
        payment = payment_for_update(payment_id=payment_id)
        return apply_intent(payment, intent, followup=followup)


def apply_intent(payment: Payment, intent: IntentResult, *, followup: bool) -> bool:
    """Bring a locked payment forward to what the gateway reports. Order-independent: a report
    behind the stored state (a late `processing` after `succeeded`) changes nothing, nor does
    a failure after success. `followup`: enqueue the capture after commit when this made the
    payment authorized (the webhook path; the processing task captures by itself).
    Caller holds the milestone and payment locks. Returns whether anything changed."""
    # Gateway ids are saved with the status change below (one UPDATE), or alone.
    dirty = []
    if intent.id and not payment.gateway_payment_id:
        payment.gateway_payment_id = intent.id
        dirty.append("gateway_payment_id")
    if intent.charge_id and not payment.gateway_charge_id:
        payment.gateway_charge_id = intent.charge_id
        dirty.append("gateway_charge_id")
    target = target_status(payment.status, intent)
    if target == Status.VERIFYING and payment.status in (Status.PROCESSING, Status.VERIFYING):
        # What the payer's browser needs to finish 3-D Secure (the first report that has it).
        if intent.next_action and payment.next_action != intent.next_action:
            payment.next_action = intent.next_action
            dirty.append("next_action")
        if intent.client_secret and payment.gateway_client_secret != intent.client_secret:
            payment.gateway_client_secret = intent.client_secret
            dirty.append("gateway_client_secret")
    stale = target is None or target == payment.status
    if not stale and target not in Payment.TRANSITIONS[payment.status]:
        logger.info(
            "stale gateway state ignored",
            extra={"payment_id": payment.pk, "current": payment.status, "reported": target},
        )
        stale = True
    if (
        not stale
        and target not in Payment.FAILURES
        and (intent.amount != payment.amount or intent.currency != payment.currency)
    ):
        logger.error("gateway amount differs", extra={"payment_id": payment.pk})
        stale = True
    if stale:
        if dirty:
            payment.save(update_fields=dirty)
        return False
    if target in Payment.FAILURES:
        if dirty:
            payment.save(update_fields=dirty)
        code, message = intent.failure_code, intent.failure_message
        if target == Status.CANCELLED and payment.status == Status.VERIFYING and not code:
            code, message = ABANDONED_CODE, _abandoned_message()
        _to_failure(payment, code=code, message=message, to=target)
        return True
    if target == Status.COMPLETED:
        payment.completed_at = timezone.now()
        payment.next_attempt_at = None
        dirty += ["completed_at", "next_attempt_at"]
    transition(payment, to=target, also=dirty)
    if target == Status.COMPLETED:
        # Both errors are raised before escrow writes anything, so no savepoint is needed.
        try:
            escrow_services.milestone_funded(
                milestone_id=payment.milestone_id,
                amount=payment.amount,
                currency=payment.currency,
                reference=f"{payment.pk}",
                provider=payment.provider,
            )
        except (IllegalTransition, FundingMismatch):
            # The money is taken but the milestone moved on (cancelled, or funded by another
            # payment): reconciliation reports it and an operator refunds it.
            logger.exception("completed payment could not fund its milestone")
        emit_payment("payment.completed", payment)
    elif target == Status.AUTHORIZED and followup and payment.capture_method == "manual":
        transaction.on_commit(lambda: enqueue_process(payment))
    return True


def payment_cancel(*, payment_id: int, actor: User | None = None) -> Payment:
    """Cancel a payment that has not reached the gateway's authorization: initiated,
    processing or verifying (a 3-D Secure challenge) → cancelled, the milestone back to
    pending; the intent is cancelled at the gateway after commit. Idempotent. Raises
    IllegalTransition."""
    with transaction.atomic(durable=True):
        payment = payment_for_update(payment_id=payment_id)
        if payment.status == Status.CANCELLED:
            return payment
        if Status.CANCELLED not in Payment.TRANSITIONS[payment.status]:
            raise IllegalTransition(
                obj_name=f"Payment {payment.pk}", current=payment.status, target=Status.CANCELLED
            )
        had_gateway_payment = bool(payment.gateway_payment_id)
        _to_failure(payment, code="cancelled", message="Cancelled.", to=Status.CANCELLED)
        if had_gateway_payment:
            transaction.on_commit(lambda: _cancel_at_gateway(payment.pk))
    return payment


def _cancel_at_gateway(payment_id: int) -> None:
    from payments.tasks import payment_cancel_at_gateway_task

    payment_cancel_at_gateway_task.delay(payment_id)


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
    call_gateway(
        provider=payment.provider,
        operation=GatewayAttempt.Operation.CANCEL,
        idempotency_key=key,
        payment=payment,
        fn=lambda: gateway.cancel_payment(
            payment_id=payment.gateway_payment_id, idempotency_key=key
        ),
    )
