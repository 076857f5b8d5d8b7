"""Refunds: an operator's partial or whole refund of a payment, and the gateway refund that
carries out escrow's milestone refund (or the refunded part of a split).

`amount_refunded` grows only when the gateway confirms, and never past `amount` (a CHECK in
the database); a new refund is refused while it plus the refunds still pending would exceed
what is left. An operator's refund holds its money in the ledger from the moment it is
created until the gateway confirms or fails it (the refund hold rule:
escrow/services/holds.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from common import transitions
from escrow import selectors as escrow_selectors
from escrow import services as escrow_services
from escrow.models import Milestone
from payments import selectors
from payments.calls import call_gateway, carry_out, next_attempt_time
from payments.exceptions import PaymentNotRefundable, RefundTooLarge
from payments.gateways import GatewayError, RefundResult, get_gateway
from payments.locks import payment_for_update, refund_for_update
from payments.models import GatewayAttempt, Payment, Refund
from payments.services._events import emit_payment, operator_ids
from payments.services.intents import transition
from payments.services.processing import Progress
from realtime.events import emit

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)
Status = Payment.Status


def _pending_total(payment: Payment) -> int:
    return (
        Refund.objects.filter(payment=payment, status=Refund.Status.PENDING).aggregate(
            total=Sum("amount")
        )["total"]
        or 0
    )


def refund_key(refund: Refund) -> str:
    return f"refund:{refund.pk}"


def escrow_reference(refund: Refund) -> str:
    """The name escrow knows an operator's refund by: its hold is hold:refund:<this>, its
    settlement refund:<this> (escrow/services/holds.py)."""
    return f"payment-refund:{refund.pk}"


def payment_refund(*, payment_id: int, amount: int, actor: User) -> Refund:
    """An operator refunds part or all of a captured payment.

    One transaction, under the locks every refund path takes (project → milestone → payment):
    the amount is checked against what is left of the payment (counting pending refunds) and
    reserved in the ledger at once (escrow.services.milestone_refund_hold: Dr escrow / Cr
    hold), so a release, a milestone refund or another refund that comes next moves only
    what is not promised. Raises PaymentNotFound, PaymentNotRefundable (409: nothing
    captured), RefundTooLarge (400: more than what is left, counting pending refunds),
    InsufficientFunds (409: escrow no longer holds it beyond other pending refunds, e.g.
    after release) and IllegalTransition (409: the milestone is frozen by a dispute, or in
    inspection and this would refund all of it). Nothing is written then. The gateway call
    runs after commit; payment.refunded is emitted when it succeeds (the refund then settles
    out of its hold), and a refund the gateway fails gives its hold back to escrow.

    Refunding everything of a milestone that is funded or submitted, with nothing refunded
    or pending, is escrow's milestone refund (the milestone becomes refunded, escrow posts
    the settlement), decided under the same locks; the gateway refund then carries it out,
    as for the homeowner's refund."""
    if type(amount) is not int or amount <= 0:
        raise RefundTooLarge("The amount must be a positive integer.", code="validation_error")
    with transaction.atomic(durable=True):
        payment = payment_for_update(payment_id=payment_id)
        milestone = payment.milestone
        if payment.status not in Payment.CAPTURED:
            raise PaymentNotRefundable(f"Payment {payment.pk} is {payment.status}.")
        pending = _pending_total(payment)
        left = payment.amount_refundable - pending
        if amount > left:
            raise RefundTooLarge(f"At most {max(left, 0)} can be refunded.")
        if _is_whole_milestone_refund(payment, milestone, amount=amount, pending=pending):
            escrow_services.milestone_refund_locked(milestone, actor=actor)
            refund = Refund.objects.create(
                payment=payment,
                amount=amount,
                currency=payment.currency,
                reason=Refund.Reason.MILESTONE_REFUNDED,
                milestone_id=milestone.pk,
                requested_by=actor,
            )
        else:
            refund = Refund.objects.create(
                payment=payment,
                amount=amount,
                currency=payment.currency,
                reason=Refund.Reason.OPERATOR,
                requested_by=actor,
            )
            escrow_services.milestone_refund_hold(
                milestone, amount=amount, reference=escrow_reference(refund)
            )
        transaction.on_commit(lambda: enqueue_refund(refund))
    return refund


def _is_whole_milestone_refund(
    payment: Payment, milestone: Milestone, *, amount: int, pending: int
) -> bool:
    """This refund gives back a funded or submitted milestone's whole escrow from a payment
    with nothing refunded or pending (escrow's refund does it then). Caller holds the locks."""
    return (
        payment.status == Status.COMPLETED
        and not payment.amount_refunded
        and not pending
        and amount == payment.amount
        and milestone.status in (Milestone.Status.FUNDED, Milestone.Status.SUBMITTED)
        and not milestone.refund_holds
        and milestone.held_amount == amount
    )


def milestone_refund_start(*, milestone_id: int) -> Refund | None:
    """Carry out escrow's refund of a milestone (or the refunded part of a split) at the
    gateway. Escrow has already posted Dr escrow / Cr gateway. Idempotent: one refund per
    milestone (a unique constraint). Returns None when there is nothing to refund."""
    settlement = escrow_selectors.milestone_settlement(milestone_id=milestone_id)
    if settlement is None:
        return None
    amount = settlement.refund_amount
    payment = selectors.captured_payment_for_milestone(milestone_id=milestone_id)
    if amount <= 0 or payment is None:
        return None
    with transaction.atomic(durable=True):
        payment = payment_for_update(payment_id=payment.pk)
        existing = Refund.objects.filter(milestone_id=milestone_id).first()
        if existing is not None:
            return existing
        refundable = payment.amount_refundable - _pending_total(payment)
        if amount > refundable:
            # Escrow's settlement leaves pending refunds' holds out, so this means the payment
            # and the ledger disagree: refund no more than the gateway holds, and say so.
            logger.error(
                "milestone refund larger than what is left of its payment",
                extra={
                    "milestone_id": milestone_id,
                    "payment_id": payment.pk,
                    "settlement_refund": amount,
                    "refundable": refundable,
                },
            )
            amount = refundable
        if amount <= 0:
            return None
        try:
            with transaction.atomic():
                refund = Refund.objects.create(
                    payment=payment,
                    amount=amount,
                    currency=payment.currency,
                    reason=Refund.Reason.MILESTONE_REFUNDED,
                    milestone_id=milestone_id,
                )
        except IntegrityError:
            return Refund.objects.get(milestone_id=milestone_id)
        transaction.on_commit(lambda: enqueue_refund(refund))
    return refund


def enqueue_refund(refund: Refund, *, countdown: float | None = None) -> None:
    from payments.tasks import refund_process_task

    refund_process_task.apply_async(args=[refund.pk], countdown=countdown)


def refund_process(*, refund_id: int) -> Progress | None:
    """Send a pending refund to the gateway (key "refund:<id>", so a rerun after a crash gets
    the first answer) and record the outcome. Transient errors defer it."""
    refund = Refund.objects.select_related("payment").filter(pk=refund_id).first()
    if refund is None or refund.status != Refund.Status.PENDING:
        return None if refund is None else Progress(refund.status)
    payment = refund.payment
    gateway = get_gateway(payment.provider)
    key = refund_key(refund)
    return carry_out(
        lambda: call_gateway(
            provider=payment.provider,
            operation=GatewayAttempt.Operation.REFUND,
            idempotency_key=key,
            refund=refund,
            payment=payment,
            fn=lambda: gateway.refund(
                payment_id=payment.gateway_payment_id,
                amount=refund.amount,
                metadata={"refund_id": refund.pk, "payment_id": payment.pk},
                idempotency_key=key,
            ),
        ),
        applied=lambda result: refund_apply(refund_id=refund.pk, result=result),
        deferred=lambda exc: _defer(refund.pk, exc),
        refused=lambda exc: _refund_failed(refund.pk, code=exc.code),
    )


def refund_apply(*, refund_id: int, result: RefundResult) -> Progress:
    """Record what the gateway says about a refund (the synchronous answer or a webhook).
    Idempotent: a refund already succeeded or failed is left alone."""
    with transaction.atomic():
        payment, refund = _lock_refund(refund_id)
        if not refund.gateway_refund_id and result.id:
            refund.gateway_refund_id = result.id
            refund.save(update_fields=["gateway_refund_id", "updated_at"])
        if refund.status != Refund.Status.PENDING:
            return Progress(refund.status)
        if result.status in ("failed", "canceled"):
            return _refund_failed(refund.pk, code="gateway_refund_failed")
        if result.status != "succeeded":
            return Progress(refund.status)
        _refund_succeeded(payment, refund)
    return Progress(refund.status)


def _refund_succeeded(payment: Payment, refund: Refund) -> None:
    """Caller holds the payment and refund locks."""
    refund.next_attempt_at = None
    transitions.transition(refund, to=Refund.Status.SUCCEEDED, also=["next_attempt_at"])
    payment.amount_refunded += refund.amount
    payment.save(update_fields=["amount_refunded", "updated_at"])
    if refund.reason == Refund.Reason.OPERATOR:
        # Escrow owns the milestone's money: it settles the refund out of its hold (Dr hold /
        # Cr gateway) and counts it as a partial refund.
        escrow_services.milestone_refund_partial(
            milestone_id=payment.milestone_id,
            amount=refund.amount,
            reference=escrow_reference(refund),
            provider=payment.provider,
        )
    target = (
        Status.REFUNDED if payment.amount_refunded == payment.amount else Status.PARTIALLY_REFUNDED
    )
    if payment.status != target:
        transition(payment, to=target)
    emit_payment(
        "payment.refunded",
        payment,
        refund_id=refund.pk,
        refund_amount=refund.amount,
    )


def _defer(refund_id: int, error: GatewayError) -> Progress:
    from django.conf import settings

    with transaction.atomic():
        _payment, refund = _lock_refund(refund_id)
        if refund.status != Refund.Status.PENDING:
            return Progress(refund.status)
        attempts = refund.attempt_count + 1
        if attempts >= settings.PAYMENTS_RETRY_MAX_ATTEMPTS * 2:
            # Refunds owe money back: keep trying far longer, then hand it to an operator.
            return _refund_failed(refund.pk, code="gateway_unavailable")
        retry_at = next_attempt_time(attempts, error)
        Refund.objects.filter(pk=refund.pk).update(
            attempt_count=attempts, next_attempt_at=retry_at, updated_at=timezone.now()
        )
    return Progress(Refund.Status.PENDING, retry_at)


def _lock_refund(refund_id: int) -> tuple[Payment, Refund]:
    """Lock a refund after its project, milestone and payment (the documented order: a failed
    refund gives its hold back to the milestone's escrow)."""
    payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
    payment = payment_for_update(payment_id=payment_id)
    return payment, refund_for_update(refund_id=refund_id)


def _refund_failed(refund_id: int, *, code: str) -> Progress:
    """Joins refund_apply's or _defer's transaction when they call it (no savepoint: an error
    here aborts the caller's whole transaction, nobody catches it to carry on)."""
    with transaction.atomic(savepoint=False):
        payment, refund = _lock_refund(refund_id)
        if refund.status == Refund.Status.PENDING:
            refund.failure_code = code[:64]
            refund.next_attempt_at = None
            transitions.transition(
                refund, to=Refund.Status.FAILED, also=["failure_code", "next_attempt_at"]
            )
            if refund.reason == Refund.Reason.OPERATOR:
                escrow_services.milestone_refund_hold_return(
                    milestone_id=payment.milestone_id, reference=escrow_reference(refund)
                )
            emit(
                "payment.refund_failed",
                {
                    "payment_id": refund.payment_id,
                    "refund_id": refund.pk,
                    "amount": refund.amount,
                    "currency": refund.currency,
                    "status": refund.status,
                    "failure_code": refund.failure_code,
                },
                aggregate=("payment", refund.payment_id),
                audience=operator_ids(),
                channels=[f"payment.{refund.payment_id}"],
            )
    return Progress(Refund.Status.FAILED)
