"""A payment's state: the one way its status moves (`transition`), what a gateway answer
means for it (`target_status`, `payment_intent_check`), and what each outcome does
(`apply_intent`; `payment_completed_locked` for a success, `_to_failure` for a failure).

Every path that learns what the gateway did comes here: the processing task
(payments/services/processing.py), a webhook (webhooks.py, one by one), a batch of webhook
successes (webhook_batch.py, which calls `payment_completed_locked` per row with escrow's
FundingBatch and one UPDATE at the end) and reconciliation. Each is a check on rows the caller
holds locked and an action on them, so the success path exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common import transitions
from escrow import reactions
from escrow import services as escrow_services
from escrow.exceptions import FundingMismatch, IllegalTransition
from payments.gateways import IntentResult
from payments.models import Payment
from payments.services._events import emit_payment

if TYPE_CHECKING:
    from common.bulk import Saves
    from escrow.services import FundingBatch

logger = logging.getLogger(__name__)
Status = Payment.Status


def transition(
    payment: Payment,
    *,
    to: str,
    also: Iterable[str] = (),
    changes: dict | None = None,
    saves: Saves | None = None,
) -> str:
    """Move a locked payment along its table through common.transitions (saving the `also`
    fields and the `changes` in the same UPDATE, or collecting them in a batch's `saves`) and
    emit payment.status_updated. Caller holds the payment's lock. Returns the previous status.

    Entering verifying starts the 3-D Secure clock (next_attempt_at = the time the challenge
    is given up); leaving it forgets the challenge (next action, client secret, clock)."""
    previous = payment.status
    changes = dict(changes or {})
    if to == Status.VERIFYING:
        changes["next_attempt_at"] = verification_deadline(timezone.now())
    elif previous == Status.VERIFYING:
        changes.update(next_action={}, gateway_client_secret="", next_attempt_at=None)
    transitions.transition(payment, to=to, changes=changes, also=also, saves=saves)
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


def _failure_status(current: str) -> str:
    return {
        Status.INITIATED: Status.CANCELLED,
        Status.PROCESSING: Status.FAILED,
        Status.VERIFYING: Status.REJECTED,
        Status.AUTHORIZED: Status.DECLINED,
    }[current]


def _to_failure(payment: Payment, *, code: str, message: str, to: str | None = None) -> None:
    """Caller holds the milestone and payment locks."""
    previous = transition(
        payment,
        to=to or _failure_status(payment.status),
        changes={
            "failure_code": (code or "payment_failed")[:64],
            "failure_message": (message or "")[:255],
            "next_attempt_at": None,
        },
    )
    if payment.purpose == Payment.Purpose.FUNDING:
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


def gateway_ids(payment: Payment, intent: IntentResult) -> list[str]:
    """Take the gateway's ids for the payment from its answer where we have none yet; returns
    the fields set (saved with the status change, or alone)."""
    dirty = []
    if intent.id and not payment.gateway_payment_id:
        payment.gateway_payment_id = intent.id
        dirty.append("gateway_payment_id")
    if intent.charge_id and not payment.gateway_charge_id:
        payment.gateway_charge_id = intent.charge_id
        dirty.append("gateway_charge_id")
    return dirty


def payment_intent_check(
    payment: Payment, intent: IntentResult, *, quiet: bool = False
) -> str | None:
    """The status the gateway's answer moves a locked payment to, or None when it moves
    nothing: a report behind the stored state (a late `processing` after `succeeded`), the
    same state, a move the table refuses (a failure after success), or a non-failure for
    another amount or currency than asked (logged as an error unless `quiet`: a batch asks
    first and leaves such rows to the one-by-one path, which logs)."""
    target = target_status(payment.status, intent)
    if target is None or target == payment.status:
        return None
    if not transitions.allowed(payment, target):
        if not quiet:
            logger.info(
                "stale gateway state ignored",
                extra={"payment_id": payment.pk, "current": payment.status, "reported": target},
            )
        return None
    if target not in Payment.FAILURES and (
        intent.amount != payment.amount or intent.currency != payment.currency
    ):
        if not quiet:
            logger.error("gateway amount differs", extra={"payment_id": payment.pk})
        return None
    return target


def apply_intent(payment: Payment, intent: IntentResult, *, followup: bool) -> bool:
    """Bring a locked payment forward to what the gateway reports. Order-independent: a report
    behind the stored state (a late `processing` after `succeeded`) changes nothing, nor does
    a failure after success. `followup`: enqueue the capture after commit when this made the
    payment authorized (the webhook path; the processing task captures by itself).
    Caller holds the milestone and payment locks. Returns whether anything changed."""
    dirty = gateway_ids(payment, intent)
    if target_status(payment.status, intent) == Status.VERIFYING and payment.status in (
        Status.PROCESSING,
        Status.VERIFYING,
    ):
        # What the payer's browser needs to finish 3-D Secure (the first report that has it).
        if intent.next_action and payment.next_action != intent.next_action:
            payment.next_action = intent.next_action
            dirty.append("next_action")
        if intent.client_secret and payment.gateway_client_secret != intent.client_secret:
            payment.gateway_client_secret = intent.client_secret
            dirty.append("gateway_client_secret")
    target = payment_intent_check(payment, intent)
    if target is None:
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
        payment_completed_locked(payment, also=dirty)
        return True
    transition(payment, to=target, also=dirty)
    if target == Status.AUTHORIZED and followup and payment.capture_method == "manual":
        transaction.on_commit(lambda: enqueue_process(payment))
    return True


def payment_completed_locked(
    payment: Payment,
    *,
    also: Iterable[str] = (),
    funding: FundingBatch | None = None,
    saves: Saves | None = None,
) -> None:
    """The gateway took the money for a payment payment_intent_check moved to completed, whose
    milestone and payment locks the caller holds: the payment completed (with the `also`
    fields), escrow funds its milestone (a funding payment), payment.completed and
    reactions.payment_completed (a top-up's owner posts it there). `funding` and `saves`: a worker's
    batch (escrow's FundingBatch, prepared for this milestone, and the collector its rows are
    saved by at the end); without them escrow's milestone_funded checks and funds it here."""
    transition(
        payment,
        to=Status.COMPLETED,
        also=also,
        changes={"completed_at": timezone.now(), "next_attempt_at": None},
        saves=saves,
    )
    if funding is not None:
        funding.fund(payment.milestone_id)
    elif payment.purpose == Payment.Purpose.FUNDING:
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
    reactions.payment_completed.fire(
        reactions.PaymentCompleted(
            payment_id=payment.pk,
            milestone_id=payment.milestone_id,
            purpose=payment.purpose,
            amount=payment.amount,
            currency=payment.currency,
        )
    )


def enqueue_process(payment: Payment, *, countdown: float | None = None) -> None:
    from payments.tasks import payment_process_task

    queue = "high" if payment.is_high_priority else "default"
    payment_process_task.apply_async(args=[payment.pk], queue=queue, countdown=countdown)


def _cancel_at_gateway(payment_id: int) -> None:
    from payments.tasks import payment_cancel_at_gateway_task

    payment_cancel_at_gateway_task.delay(payment_id)
