"""Payouts: the contractor's share of a released (or split) milestone, sent as a Connect
transfer with `transfer_group` per project and `source_transaction` = the funding charge.

Ledger: on start Dr payable:user:<id> / Cr payout:in_transit ("payout:<payout id>"); when the
gateway confirms Dr payout:in_transit / Cr gateway ("payout-paid:<id>"); if it definitively
fails the money is owed again ("payout-failed:<id>"). When the gateway reverses a paid
transfer, fully or in parts, the reversed money is owed again: Dr gateway / Cr payable per
step ("payout-reversal:<id>:<cumulative amount reversed>"), status partially_reversed or
reversed."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.transitions import transition
from escrow import selectors as escrow_selectors
from escrow.models import Milestone
from escrow.services import payables
from payments import selectors
from payments.calls import call_gateway, carry_out, next_attempt_time
from payments.exceptions import TransferReversalInvalid
from payments.gateways import GatewayError, TransferResult, get_gateway
from payments.locks import payout_for_update
from payments.models import GatewayAttempt, Payout
from payments.services._events import emit_payout, operator_ids, operators_email
from payments.services.processing import Progress

logger = logging.getLogger(__name__)


def transfer_key(payout: Payout) -> str:
    return f"payout:{payout.pk}:transfer"


def transfer_group_for(project_id: int) -> str:
    return f"project-{project_id}"


def _transfer(payout: Payout) -> payables.PayableTransfer:
    """The payout as escrow's ledger knows it."""
    return payables.PayableTransfer(
        reference=str(payout.pk),
        user_id=payout.payee_id,
        amount=payout.amount,
        currency=payout.currency,
        provider=payout.provider,
    )


def payout_start(*, milestone_id: int) -> Payout | None:
    """Start paying the contractor what a released or split milestone owes them.

    Idempotent: one first payout per milestone (a unique constraint; what a failed or
    reversed one leaves owed is paid by `payout_retry`). Posts payable → in transit and
    enqueues the transfer after commit. Returns None when nothing is owed."""
    settlement = escrow_selectors.milestone_settlement(milestone_id=milestone_id)
    if settlement is None or settlement.payout_amount <= 0:
        return None
    milestone = Milestone.objects.select_related("project").get(pk=milestone_id)
    project = milestone.project
    amount = settlement.payout_amount
    payment = selectors.captured_payment_for_milestone(milestone_id=milestone_id)
    provider = payment.provider if payment else milestone.funded_via or settings.PAYMENT_GATEWAY
    with transaction.atomic(durable=True):
        existing = Payout.objects.filter(milestone_id=milestone_id, retry_of=None).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                payout = Payout.objects.create(
                    milestone=milestone,
                    payment=payment,
                    payee_id=project.contractor_id,
                    provider=provider,
                    amount=amount,
                    currency=project.currency,
                    transfer_group=transfer_group_for(project.pk),
                )
        except IntegrityError:
            return Payout.objects.get(milestone_id=milestone_id, retry_of=None)
        payables.payable_transfer_started(_transfer(payout))
        emit_payout("payout.started", payout)
        transaction.on_commit(lambda: enqueue_payout(payout))
    return payout


def enqueue_payout(payout: Payout, *, countdown: float | None = None) -> None:
    from payments.tasks import payout_process_task

    payout_process_task.apply_async(args=[payout.pk], countdown=countdown)


def payout_process(*, payout_id: int) -> Progress | None:
    """Send a pending payout's transfer (key "payout:<id>:transfer": a rerun after a crash
    gets the first transfer back, never a second one) and record the outcome."""
    payout = Payout.objects.select_related("payment", "payee").filter(pk=payout_id).first()
    if payout is None:
        return None
    if payout.status not in (Payout.Status.PENDING, Payout.Status.NEEDS_ACCOUNT):
        return Progress(payout.status)
    gateway = get_gateway(payout.provider)
    destination = payout.destination or gateway.payout_destination_for(user=payout.payee)
    with transaction.atomic():
        locked = payout_for_update(payout_id=payout.pk)
        if not destination:
            if locked.status == Payout.Status.PENDING:
                transition(locked, to=Payout.Status.NEEDS_ACCOUNT)
            return Progress(locked.status)
        locked.destination = destination
        if locked.status == Payout.Status.NEEDS_ACCOUNT:
            transition(locked, to=Payout.Status.PENDING, also=["destination"])
        else:
            # The status stays what the locked row says (pending): only the destination.
            locked.save(update_fields=["destination", "updated_at"])
    key = transfer_key(payout)
    source = payout.payment.gateway_charge_id if payout.payment else ""
    return carry_out(
        lambda: call_gateway(
            provider=payout.provider,
            operation=GatewayAttempt.Operation.TRANSFER,
            idempotency_key=key,
            payout=payout,
            fn=lambda: gateway.transfer(
                amount=payout.amount,
                currency=payout.currency,
                destination=destination,
                source_transaction=source,
                transfer_group=payout.transfer_group,
                metadata={"payout_id": payout.pk, "milestone_id": payout.milestone_id},
                idempotency_key=key,
            ),
        ),
        applied=lambda result: payout_apply(payout_id=payout.pk, result=result),
        deferred=lambda exc: _defer(payout.pk, exc),
        refused=lambda exc: _payout_failed(payout.pk, code=exc.code),
    )


def payout_apply(*, payout_id: int, result: TransferResult) -> Progress:
    """Record what the gateway says about a payout's transfer: its synchronous answer, a
    transfer.created/updated/reversed webhook, or reconciliation.

    A pending payout becomes paid (in transit → gateway, payout.paid); then any reversal the
    transfer carries is applied (`_apply_reversal`), so a transfer.reversed that overtakes the
    answer to our own call ends in the same state as the calls in order. Idempotent and
    order-independent: Stripe's `amount_reversed` is cumulative, so an amount at or below the
    one recorded is stale and changes nothing. Raises TransferReversalInvalid, before any
    write, when the transfer reverses more than the payout's amount or belongs to another
    transfer or currency."""
    with transaction.atomic():
        payout = payout_for_update(payout_id=payout_id)
        _check_transfer(payout, result)
        if payout.status == Payout.Status.PENDING:
            _mark_paid(payout, result)
        if result.amount_reversed > payout.amount_reversed:
            if payout.status in Payout.REVERSIBLE:
                _apply_reversal(payout, result)
            else:
                # failed / needs_account: the gateway never paid it, so there is nothing it
                # could have taken back; an operator looks at the transfer.
                logger.warning(
                    "transfer reversal for a payout that was never paid",
                    extra={"payout_id": payout.pk, "status": payout.status},
                )
    return Progress(payout.status)


def _check_transfer(payout: Payout, result: TransferResult) -> None:
    """Caller holds the payout's lock. Nothing has been written yet when this raises."""
    if payout.gateway_transfer_id and result.id and result.id != payout.gateway_transfer_id:
        raise TransferReversalInvalid(
            f"Transfer {result.id} is not payout {payout.pk}'s ({payout.gateway_transfer_id})."
        )
    if result.currency and result.currency != payout.currency:
        raise TransferReversalInvalid(
            f"Transfer {result.id} is in {result.currency}; payout {payout.pk} is in "
            f"{payout.currency}."
        )
    limit = min(payout.amount, result.amount) if result.amount else payout.amount
    if not 0 <= result.amount_reversed <= limit:
        raise TransferReversalInvalid(
            f"Transfer {result.id} reports {result.amount_reversed} reversed; payout "
            f"{payout.pk} transferred {payout.amount} (gateway amount {result.amount})."
        )


def _mark_paid(payout: Payout, result: TransferResult) -> None:
    """pending → paid. Caller holds the payout's lock."""
    payout.gateway_transfer_id = result.id
    payout.paid_at = timezone.now()
    payout.next_attempt_at = None
    transition(
        payout, to=Payout.Status.PAID, also=["gateway_transfer_id", "paid_at", "next_attempt_at"]
    )
    payables.payable_transfer_paid(_transfer(payout))
    emit_payout("payout.paid", payout, transfer_id=result.id)


def _apply_reversal(payout: Payout, result: TransferResult) -> None:
    """The gateway took back (more of) a paid transfer: the money is at the platform again and
    owed to the contractor. Caller holds the payout's lock and has checked the amount.

    Ledger: Dr gateway:<provider> / Cr payable:user:<id> for the step (new cumulative amount
    less the recorded one), reference "payout-reversal:<payout id>:<cumulative amount>", kind
    `payout_reversed` (the reference prefix is what check_ledger reads). Emits
    payout.reversed to the contractor and operators, and e-mails
    operators after commit: someone has to decide whether to pay the contractor again."""
    step = result.amount_reversed - payout.amount_reversed
    previous = payout.status
    target = Payout.status_after_reversal(
        amount=payout.amount, amount_reversed=result.amount_reversed
    )
    payout.amount_reversed = result.amount_reversed
    payout.reversed_at = timezone.now()
    if target != previous:
        # Raises IllegalTransition (nothing saved) when the table refuses the move.
        transition(payout, to=target, also=["amount_reversed", "reversed_at"])
    else:
        # A further partial reversal stays partially_reversed: not a move, so not the
        # table's business; only the amounts change.
        payout.save(update_fields=["amount_reversed", "reversed_at", "updated_at"])
    operators = operator_ids()
    emit_payout(
        "payout.reversed",
        payout,
        also_to=operators,
        previous_status=previous,
        amount_reversed=payout.amount_reversed,
        reversal_amount=step,
        transfer_id=result.id or payout.gateway_transfer_id,
    )
    payables.payable_transfer_reversed(
        _transfer(payout),
        step=step,
        amount_reversed=payout.amount_reversed,
        memo=f"transfer {result.id or payout.gateway_transfer_id} reversed",
    )
    operators_email(
        operators=operators,
        subject=f"Payout {payout.pk} reversed at the gateway",
        message=(
            f"The gateway reversed {step} {payout.currency} of transfer "
            f"{result.id or payout.gateway_transfer_id} (payout {payout.pk}, milestone "
            f"{payout.milestone_id}); {payout.amount_reversed} of {payout.amount} is now "
            f"reversed and owed to the contractor (user {payout.payee_id}) again."
        ),
    )


def _defer(payout_id: int, error: GatewayError) -> Progress:
    with transaction.atomic():
        payout = payout_for_update(payout_id=payout_id)
        if payout.status != Payout.Status.PENDING:
            return Progress(payout.status)
        attempts = payout.attempt_count + 1
        retry_at = next_attempt_time(attempts, error)
        Payout.objects.filter(pk=payout.pk).update(
            attempt_count=attempts, next_attempt_at=retry_at, updated_at=timezone.now()
        )
    return Progress(Payout.Status.PENDING, retry_at)


def _payout_failed(payout_id: int, *, code: str) -> Progress:
    with transaction.atomic():
        payout = payout_for_update(payout_id=payout_id)
        if payout.status in (Payout.Status.PENDING, Payout.Status.NEEDS_ACCOUNT):
            payout.failure_code = code[:64]
            payout.next_attempt_at = None
            transition(payout, to=Payout.Status.FAILED, also=["failure_code", "next_attempt_at"])
            payables.payable_transfer_failed(_transfer(payout))
            emit_payout("payout.failed", payout, failure_code=payout.failure_code)
    return Progress(Payout.Status.FAILED)


def payout_account_set(*, user, provider: str, account_id: str):
    """Record a contractor's connected account and retry payouts that waited for it."""
    from payments.models import PayoutAccount

    with transaction.atomic(durable=True):
        account, _ = PayoutAccount.objects.update_or_create(
            user=user, provider=provider, defaults={"account_id": account_id}
        )
        waiting = list(
            Payout.objects.filter(
                payee=user, provider=provider, status=Payout.Status.NEEDS_ACCOUNT
            ).values_list("pk", flat=True)
        )
        for payout_id in waiting:
            transaction.on_commit(lambda payout_id=payout_id: enqueue_payout(Payout(pk=payout_id)))
    return account
