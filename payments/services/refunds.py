"""Refunds: an operator's partial or whole refund of a payment, and the gateway refund that
carries out escrow's milestone refund (or the refunded part of a split).

`amount_refunded` grows only when the gateway confirms, and never past `amount` (a CHECK in
the database); a new refund is refused while it plus the refunds still pending would exceed
what is left."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from escrow import ledger
from escrow import services as escrow_services
from escrow.exceptions import InsufficientFunds
from escrow.models import JournalEntry, LedgerAccount, Milestone
from payments.calls import call_gateway, next_attempt_time
from payments.exceptions import PaymentNotRefundable, RefundTooLarge
from payments.gateways import GatewayError, RefundResult, get_gateway
from payments.locks import payment_for_update, refund_for_update
from payments.models import GatewayAttempt, Payment, Refund
from payments.services._events import emit_payment, operator_ids
from payments.services.funding import Progress, transition
from realtime.events import emit

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


def payment_refund(*, payment_id: int, amount: int, actor) -> Refund:
    """An operator refunds part or all of a captured payment.

    Takes the amount out of the milestone's escrow (Dr escrow / Cr gateway, posted when the
    gateway confirms). Raises PaymentNotFound, PaymentNotRefundable (409: nothing captured),
    RefundTooLarge (400: more than what is left, counting pending refunds) and
    InsufficientFunds (409: the escrow no longer holds it, e.g. after release). The gateway
    call runs after commit; payment.refunded is emitted when it succeeds.

    Refunding everything of a milestone that is funded or submitted is escrow's milestone
    refund (the milestone becomes refunded, escrow posts the settlement); the gateway refund
    then carries it out, as for the homeowner's refund."""
    if type(amount) is not int or amount <= 0:
        raise RefundTooLarge("The amount must be a positive integer.", code="validation_error")
    whole = _whole_milestone_refund(payment_id=payment_id, amount=amount)
    if whole is not None:
        escrow_services.milestone_refund(milestone_id=whole, actor=actor)
        refund = milestone_refund_start(milestone_id=whole)
        if refund is not None:
            return refund
    with transaction.atomic(durable=True):
        payment = payment_for_update(payment_id=payment_id)
        if payment.status not in Payment.CAPTURED:
            raise PaymentNotRefundable(f"Payment {payment.pk} is {payment.status}.")
        left = payment.amount_refundable - _pending_total(payment)
        if amount > left:
            raise RefundTooLarge(f"At most {max(left, 0)} can be refunded.")
        held = ledger.escrow_balance_of(payment.milestone_id)
        pending_operator = (
            Refund.objects.filter(
                payment=payment, status=Refund.Status.PENDING, reason=Refund.Reason.OPERATOR
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        if amount + pending_operator > held:
            raise InsufficientFunds(
                f"The milestone's escrow holds {held}; it cannot refund {amount}."
            )
        refund = Refund.objects.create(
            payment=payment,
            amount=amount,
            currency=payment.currency,
            reason=Refund.Reason.OPERATOR,
            requested_by=actor,
        )
        transaction.on_commit(lambda: enqueue_refund(refund))
    return refund


def _whole_milestone_refund(*, payment_id: int, amount: int) -> int | None:
    """The milestone id when this refund gives back a funded or submitted milestone's whole
    escrow from a payment with nothing refunded yet (escrow's refund does it then)."""
    payment = Payment.objects.filter(pk=payment_id).select_related("milestone").first()
    if payment is None or payment.status != Status.COMPLETED or payment.amount_refunded:
        return None
    if amount != payment.amount or _pending_total(payment):
        return None
    milestone = payment.milestone
    if milestone.status not in (Milestone.Status.FUNDED, Milestone.Status.SUBMITTED):
        return None
    if ledger.escrow_balance_of(milestone.pk) != amount:
        return None
    return milestone.pk


def milestone_refund_start(*, milestone_id: int) -> Refund | None:
    """Carry out escrow's refund of a milestone (or the refunded part of a split) at the
    gateway. Escrow has already posted Dr escrow / Cr gateway. Idempotent: one refund per
    milestone (a unique constraint). Returns None when there is nothing to refund."""
    reference = None
    for kind in (JournalEntry.Kind.REFUND, JournalEntry.Kind.SPLIT):
        entry = JournalEntry.objects.filter(reference=f"{kind}:{milestone_id}").first()
        if entry is not None:
            reference = entry
            break
    if reference is None:
        return None
    amount = -sum(
        posting.amount
        for posting in reference.postings.select_related("account")
        if posting.account.kind == LedgerAccount.Kind.GATEWAY
    )
    payment = (
        Payment.objects.filter(milestone_id=milestone_id, status__in=Payment.CAPTURED)
        .order_by("-id")
        .first()
    )
    if amount <= 0 or payment is None:
        return None
    with transaction.atomic(durable=True):
        payment = payment_for_update(payment_id=payment.pk)
        existing = Refund.objects.filter(milestone_id=milestone_id).first()
        if existing is not None:
            return existing
        amount = min(amount, payment.amount_refundable - _pending_total(payment))
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
    try:
        result = call_gateway(
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
        )
    except GatewayError as exc:
        if exc.transient:
            return _defer(refund.pk, exc)
        return _refund_failed(refund.pk, code=exc.code)
    return refund_apply(refund_id=refund.pk, result=result)


def refund_apply(*, refund_id: int, result: RefundResult) -> Progress:
    """Record what the gateway says about a refund (the synchronous answer or a webhook).
    Idempotent: a refund already succeeded or failed is left alone."""
    with transaction.atomic():
        payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
        payment = payment_for_update(payment_id=payment_id)
        refund = refund_for_update(refund_id=refund_id)
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
    refund.status = Refund.Status.SUCCEEDED
    refund.next_attempt_at = None
    refund.save(update_fields=["status", "next_attempt_at", "updated_at"])
    payment.amount_refunded += refund.amount
    payment.save(update_fields=["amount_refunded", "updated_at"])
    if refund.reason == Refund.Reason.OPERATOR:
        # Escrow owns the milestone's money: it posts Dr escrow / Cr gateway and remembers the
        # partial refund, so a later release moves only what is left.
        escrow_services.milestone_refund_partial(
            milestone_id=payment.milestone_id,
            amount=refund.amount,
            reference=f"payment-refund:{refund.pk}",
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
        refund = refund_for_update(refund_id=refund_id)
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


def _refund_failed(refund_id: int, *, code: str) -> Progress:
    with transaction.atomic():
        refund = refund_for_update(refund_id=refund_id)
        if refund.status == Refund.Status.PENDING:
            refund.status = Refund.Status.FAILED
            refund.failure_code = code[:64]
            refund.next_attempt_at = None
            refund.save(update_fields=["status", "failure_code", "next_attempt_at", "updated_at"])
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
