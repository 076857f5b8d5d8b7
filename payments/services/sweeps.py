"""Beat work: what a crash, a lost enqueue or a lost reaction left behind."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from escrow import selectors as escrow_selectors
from payments.models import Payment, Payout, Refund
from payments.services import intents, payouts, refunds


def work_due(*, now=None, batch_size: int = 200) -> dict:
    """Enqueue payments, refunds and payouts whose next attempt time has come (the long
    delays live here, not in broker countdowns), plus payments stuck in initiated or
    processing without one (a lost enqueue or a killed worker), and payments whose 3-D Secure
    challenge has passed its deadline (processing gives it up: processing._verification_check)."""
    now = now or timezone.now()
    # Short delays also ride a countdown; give those a head start before beat doubles them.
    grace = timedelta(seconds=settings.PAYMENTS_RETRY_COUNTDOWN_MAX_SECONDS)
    stuck = now - timedelta(minutes=2)
    payment_ids = list(
        Payment.objects.filter(status__in=Payment.OPEN, next_attempt_at__lte=now - grace)
        .exclude(status=Payment.Status.VERIFYING)
        .values_list("pk", flat=True)[:batch_size]
    )
    # A verifying payment's next_attempt_at is its challenge deadline; no countdown rides it,
    # so no grace either. Rows from before the deadline existed fall back to updated_at.
    verification_timeout = timedelta(seconds=settings.PAYMENTS_VERIFICATION_TIMEOUT_SECONDS)
    payment_ids += list(
        Payment.objects.filter(status=Payment.Status.VERIFYING)
        .filter(
            Q(next_attempt_at__lte=now)
            | Q(next_attempt_at__isnull=True, updated_at__lt=now - verification_timeout)
        )
        .values_list("pk", flat=True)[:batch_size]
    )
    payment_ids += list(
        Payment.objects.filter(
            status__in=[
                Payment.Status.INITIATED,
                Payment.Status.PROCESSING,
                Payment.Status.AUTHORIZED,
            ],
            next_attempt_at__isnull=True,
            updated_at__lt=stuck,
        ).values_list("pk", flat=True)[:batch_size]
    )
    for payment in Payment.objects.filter(pk__in=payment_ids):
        intents.enqueue_process(payment)
    refund_ids = list(
        Refund.objects.filter(status=Refund.Status.PENDING)
        .filter(next_attempt_at__lte=now - grace)
        .values_list("pk", flat=True)[:batch_size]
    )
    refund_ids += list(
        Refund.objects.filter(
            status=Refund.Status.PENDING, next_attempt_at__isnull=True, updated_at__lt=stuck
        ).values_list("pk", flat=True)[:batch_size]
    )
    for refund_id in refund_ids:
        refunds.enqueue_refund(Refund(pk=refund_id))
    payout_ids = list(
        Payout.objects.filter(status=Payout.Status.PENDING)
        .filter(next_attempt_at__lte=now - grace)
        .values_list("pk", flat=True)[:batch_size]
    )
    payout_ids += list(
        Payout.objects.filter(
            status=Payout.Status.PENDING, next_attempt_at__isnull=True, updated_at__lt=stuck
        ).values_list("pk", flat=True)[:batch_size]
    )
    for payout_id in payout_ids:
        payouts.enqueue_payout(Payout(pk=payout_id))
    return {"payments": payment_ids, "refunds": refund_ids, "payouts": payout_ids}


def settlements_sweep(*, batch_size: int = 100) -> dict:
    """Released or split milestones without a payout, and refunded or split ones without a
    gateway refund: the reaction was lost (a crash between commit and its handler)."""
    missing_payout = list(
        escrow_selectors.milestones_settled_with(part="payout")
        .filter(payouts__isnull=True)
        .values_list("pk", flat=True)[:batch_size]
    )
    missing_refund = list(
        escrow_selectors.milestones_settled_with(part="refund")
        .exclude(pk__in=Refund.objects.filter(milestone__isnull=False).values("milestone_id"))
        .values_list("pk", flat=True)[:batch_size]
    )
    started_payouts = [m for m in missing_payout if payouts.payout_start(milestone_id=m)]
    started_refunds = [m for m in missing_refund if refunds.milestone_refund_start(milestone_id=m)]
    return {"payouts": started_payouts, "refunds": started_refunds}
