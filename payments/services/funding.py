"""Funding a milestone: the payment a homeowner starts, and its cancellation.

`payment_fund` (one transaction: escrow's pending → funding, the Payment row,
payment.started) enqueues payments/services/processing.py's `payment_process` after commit;
what the gateway answers is applied by payments/services/intents.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction

from escrow import money
from escrow import services as escrow_services
from escrow.exceptions import IllegalTransition
from payments.exceptions import FundingInProgress, PaymentMethodInvalid
from payments.locks import payment_for_update
from payments.models import Payment, PaymentMethod
from payments.services._events import emit_payment
from payments.services.intents import _cancel_at_gateway, _to_failure, enqueue_process

if TYPE_CHECKING:
    from accounts.models import User

Status = Payment.Status


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
