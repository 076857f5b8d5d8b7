"""Payouts: the contractor's share of a released (or split) milestone, sent as a Connect
transfer with `transfer_group` per project and `source_transaction` = the funding charge.

Ledger: on start Dr payable:user:<id> / Cr payout:in_transit ("payout:<payout id>"); when the
gateway confirms Dr payout:in_transit / Cr gateway ("payout-paid:<id>"); if it definitively
fails the money is owed again ("payout-failed:<id>")."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from escrow import ledger
from escrow.models import JournalEntry, LedgerAccount, Milestone
from payments.calls import call_gateway, next_attempt_time
from payments.gateways import GatewayError, TransferResult, get_gateway
from payments.locks import payout_for_update
from payments.models import GatewayAttempt, Payment, Payout
from payments.services._events import emit_payout
from payments.services.funding import Progress

logger = logging.getLogger(__name__)


def transfer_key(payout: Payout) -> str:
    return f"payout:{payout.pk}:transfer"


def transfer_group_for(project_id: int) -> str:
    return f"project-{project_id}"


def _payable_amount(milestone_id: int, contractor_id: int) -> int:
    for kind in (JournalEntry.Kind.RELEASE, JournalEntry.Kind.SPLIT):
        entry = JournalEntry.objects.filter(reference=f"{kind}:{milestone_id}").first()
        if entry is not None:
            return -sum(
                posting.amount
                for posting in entry.postings.select_related("account")
                if posting.account.kind == LedgerAccount.Kind.PAYABLE
                and posting.account.user_id == contractor_id
            )
    return 0


def payout_start(*, milestone_id: int) -> Payout | None:
    """Start paying the contractor what a released or split milestone owes them.

    Idempotent: one payout per milestone (a unique constraint). Posts payable → in transit
    and enqueues the transfer after commit. Returns None when nothing is owed."""
    milestone = Milestone.objects.select_related("project").filter(pk=milestone_id).first()
    if milestone is None:
        return None
    project = milestone.project
    amount = _payable_amount(milestone_id, project.contractor_id)
    if amount <= 0:
        return None
    payment = (
        Payment.objects.filter(milestone_id=milestone_id, status__in=Payment.CAPTURED)
        .order_by("-id")
        .first()
    )
    provider = payment.provider if payment else milestone.funded_via or settings.PAYMENT_GATEWAY
    with transaction.atomic(durable=True):
        existing = Payout.objects.filter(milestone_id=milestone_id).first()
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
            return Payout.objects.get(milestone_id=milestone_id)
        ledger.post_payout_started(
            payout_reference=str(payout.pk),
            user_id=payout.payee_id,
            amount=payout.amount,
            currency=payout.currency,
        )
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
                locked.status = Payout.Status.NEEDS_ACCOUNT
                locked.save(update_fields=["status", "updated_at"])
            return Progress(locked.status)
        if locked.status == Payout.Status.NEEDS_ACCOUNT:
            locked.status = Payout.Status.PENDING
        locked.destination = destination
        locked.save(update_fields=["status", "destination", "updated_at"])
    key = transfer_key(payout)
    source = payout.payment.gateway_charge_id if payout.payment else ""
    try:
        result = call_gateway(
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
        )
    except GatewayError as exc:
        if exc.transient:
            return _defer(payout.pk, exc)
        return _payout_failed(payout.pk, code=exc.code)
    return payout_apply(payout_id=payout.pk, result=result)


def payout_apply(*, payout_id: int, result: TransferResult) -> Progress:
    """Record a transfer the gateway made (synchronous answer or transfer.created webhook):
    in transit → paid, payout.paid. Idempotent."""
    with transaction.atomic():
        payout = payout_for_update(payout_id=payout_id)
        if payout.status != Payout.Status.PENDING:
            return Progress(payout.status)
        if result.reversed:
            return _payout_failed(payout.pk, code="transfer_reversed")
        payout.status = Payout.Status.PAID
        payout.gateway_transfer_id = result.id
        payout.paid_at = timezone.now()
        payout.next_attempt_at = None
        payout.save(
            update_fields=[
                "status",
                "gateway_transfer_id",
                "paid_at",
                "next_attempt_at",
                "updated_at",
            ]
        )
        ledger.post_payout_paid(
            payout_reference=str(payout.pk),
            user_id=payout.payee_id,
            amount=payout.amount,
            currency=payout.currency,
            provider=payout.provider,
        )
        emit_payout("payout.paid", payout, transfer_id=result.id)
    return Progress(payout.status)


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
            payout.status = Payout.Status.FAILED
            payout.failure_code = code[:64]
            payout.next_attempt_at = None
            payout.save(update_fields=["status", "failure_code", "next_attempt_at", "updated_at"])
            ledger.post_payout_failed(
                payout_reference=str(payout.pk),
                user_id=payout.payee_id,
                amount=payout.amount,
                currency=payout.currency,
            )
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
