"""Reconciliation: compare the gateway's records (payments, refunds, transfers) with ours and
the ledger, store each difference as a Discrepancy, and repair what is safe to repair — a
webhook we missed — by re-fetching the object from the gateway and applying it through the
same code as a webhook would."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from escrow import selectors as escrow_selectors
from payments.exceptions import TransferReversalInvalid
from payments.gateways import GatewayError, get_gateway
from payments.locks import payment_for_update
from payments.models import Discrepancy, Payment, Payout, ReconciliationRun, Refund
from payments.services import intents, payouts, refunds

logger = logging.getLogger(__name__)
Kind = Discrepancy.Kind


def reconcile(*, since: datetime | None = None, provider: str | None = None) -> ReconciliationRun:
    """Run one reconciliation for a provider (default: the configured one) over objects
    created since `since` (default: PAYMENTS_RECONCILE_LOOKBACK ago). Returns the run with
    its findings; never raises for a gateway error (the run records it)."""
    provider = provider or settings.PAYMENT_GATEWAY
    since = since or timezone.now() - settings.PAYMENTS_RECONCILE_LOOKBACK
    run = ReconciliationRun.objects.create(provider=provider, since=since)
    gateway = get_gateway(provider)
    created_since = int(since.timestamp())
    errors = []
    for check in (_check_payments, _check_refunds, _check_transfers):
        try:
            check(run, gateway, provider, since, created_since)
        except GatewayError as exc:
            errors.append(f"{check.__name__}: {exc.code}")
            logger.warning("reconciliation check failed", extra={"check": check.__name__})
    run.finished_at = timezone.now()
    run.discrepancy_count = run.findings.count()
    run.repaired_count = run.findings.filter(is_repaired=True).count()
    run.error = "; ".join(errors)[:255]
    run.save()
    return run


def _report(run, kind, object_type, *, gateway_id="", local_id="", detail="", repaired=False):
    return Discrepancy.objects.create(
        run=run,
        kind=kind,
        object_type=object_type,
        gateway_object_id=gateway_id or "",
        local_id=str(local_id or ""),
        detail=detail[:500],
        is_repaired=repaired,
    )


def _meta_id(metadata: dict, name: str) -> int | None:
    try:
        return int((metadata or {}).get(name))
    except (TypeError, ValueError):
        return None


def _check_payments(run, gateway, provider, since, created_since) -> None:
    remote = gateway.list_payments(created_since=created_since)
    seen = set()
    for intent in remote:
        run.checked += 1
        seen.add(intent.id)
        payment_id = _meta_id(intent.metadata, "payment_id")
        payment = (
            Payment.objects.filter(provider=provider, pk=payment_id).first() if payment_id else None
        )
        payment = (
            payment
            or Payment.objects.filter(provider=provider, gateway_payment_id=intent.id).first()
        )
        if payment is None:
            _report(
                run,
                Kind.MISSING_LOCALLY,
                "payment",
                gateway_id=intent.id,
                detail=f"{intent.status} {intent.amount} {intent.currency} has no local payment",
            )
            continue
        if intent.amount != payment.amount or intent.currency != payment.currency:
            _report(
                run,
                Kind.AMOUNT_MISMATCH,
                "payment",
                gateway_id=intent.id,
                local_id=payment.pk,
                detail=f"gateway {intent.amount} {intent.currency}, "
                f"local {payment.amount} {payment.currency}",
            )
            continue
        expected = intents.target_status(payment.status, intent)
        behind = (
            expected is not None
            and expected != payment.status
            and expected in Payment.TRANSITIONS[payment.status]
        )
        if behind:
            # A missed webhook: re-fetch (the list may be stale) and apply as the webhook would.
            fresh = gateway.retrieve_payment(payment_id=intent.id)
            with transaction.atomic():
                locked = payment_for_update(payment_id=payment.pk)
                repaired = intents.apply_intent(locked, fresh, followup=True)
            _report(
                run,
                Kind.STATUS_MISMATCH,
                "payment",
                gateway_id=intent.id,
                local_id=payment.pk,
                detail=f"gateway {intent.status}, local {payment.status}",
                repaired=repaired,
            )
        elif intent.status == "succeeded" and payment.status in Payment.FAILURES:
            _report(
                run,
                Kind.STATUS_MISMATCH,
                "payment",
                gateway_id=intent.id,
                local_id=payment.pk,
                detail=f"gateway captured the money but the payment is {payment.status}: refund it",
            )
        payment.refresh_from_db()
        if (
            payment.status in Payment.CAPTURED
            and payment.purpose == Payment.Purpose.FUNDING
            and not escrow_selectors.funding_posted(reference=f"{payment.pk}")
        ):
            _report(
                run,
                Kind.LEDGER_MISSING,
                "payment",
                gateway_id=intent.id,
                local_id=payment.pk,
                detail=f"no ledger entry fund:{payment.pk}",
            )
    for payment in Payment.objects.filter(
        provider=provider, created_at__gte=since + timedelta(seconds=1)
    ).exclude(gateway_payment_id=""):
        if payment.gateway_payment_id in seen:
            continue
        try:
            gateway.retrieve_payment(payment_id=payment.gateway_payment_id)
        except GatewayError as exc:
            if exc.transient:
                raise
            _report(
                run,
                Kind.MISSING_AT_GATEWAY,
                "payment",
                gateway_id=payment.gateway_payment_id,
                local_id=payment.pk,
                detail=f"the gateway does not know it ({exc.code})",
            )


def _local_match(run, remote, rows, *, what, id_key, gateway_field, missing):
    """The local row a gateway object (a refund, a transfer) is about: by the id we put in its
    metadata, else by its gateway id. Reports it missing locally (`missing` in words) or with
    another amount, and then returns None: the caller goes on to the next object."""
    local_id = _meta_id(remote.metadata, id_key)
    local = rows.filter(pk=local_id).first() if local_id else None
    local = local or rows.model.objects.filter(**{gateway_field: remote.id}).first()
    if local is None:
        _report(run, Kind.MISSING_LOCALLY, what, gateway_id=remote.id, detail=missing)
        return None
    if remote.amount != local.amount:
        _report(
            run,
            Kind.AMOUNT_MISMATCH,
            what,
            gateway_id=remote.id,
            local_id=local.pk,
            detail=f"gateway {remote.amount}, local {local.amount}",
        )
        return None
    return local


def _check_refunds(run, gateway, provider, since, created_since) -> None:
    seen = set()
    for remote in gateway.list_refunds(created_since=created_since):
        run.checked += 1
        seen.add(remote.id)
        refund = _local_match(
            run,
            remote,
            Refund.objects.filter(payment__provider=provider),
            what="refund",
            id_key="refund_id",
            gateway_field="gateway_refund_id",
            missing=f"{remote.status} {remote.amount} {remote.currency} has no local refund",
        )
        if refund is None:
            continue
        if refund.status == Refund.Status.PENDING and remote.status in ("succeeded", "failed"):
            fresh = gateway.retrieve_refund(refund_id=remote.id)
            refunds.refund_apply(refund_id=refund.pk, result=fresh)
            _report(
                run,
                Kind.STATUS_MISMATCH,
                "refund",
                gateway_id=remote.id,
                local_id=refund.pk,
                detail=f"gateway {remote.status}, local pending",
                repaired=True,
            )
    for refund in Refund.objects.filter(
        payment__provider=provider, status=Refund.Status.SUCCEEDED, created_at__gte=since
    ).exclude(gateway_refund_id__in=seen):
        _report(
            run,
            Kind.MISSING_AT_GATEWAY,
            "refund",
            gateway_id=refund.gateway_refund_id,
            local_id=refund.pk,
            detail="succeeded locally, not in the gateway's list",
        )


def _check_transfers(run, gateway, provider, since, created_since) -> None:
    seen = set()
    for remote in gateway.list_transfers(created_since=created_since):
        run.checked += 1
        seen.add(remote.id)
        payout = _local_match(
            run,
            remote,
            Payout.objects.filter(provider=provider),
            what="transfer",
            id_key="payout_id",
            gateway_field="gateway_transfer_id",
            missing=f"{remote.amount} {remote.currency} to {remote.destination} has no payout",
        )
        if payout is None:
            continue
        before = (payout.status, payout.amount_reversed)
        if before[0] != Payout.Status.PENDING and remote.amount_reversed == before[1]:
            continue
        if remote.amount_reversed < before[1]:
            # We never take a reversal back: someone has to look at both sides.
            _report(
                run,
                Kind.AMOUNT_MISMATCH,
                "transfer",
                gateway_id=remote.id,
                local_id=payout.pk,
                detail=f"gateway reversed {remote.amount_reversed}, local {before[1]}",
            )
            continue
        # A missed transfer.created or transfer.reversed: apply it as the webhook would.
        try:
            payouts.payout_apply(payout_id=payout.pk, result=remote)
        except TransferReversalInvalid as exc:
            _report(
                run,
                Kind.AMOUNT_MISMATCH,
                "transfer",
                gateway_id=remote.id,
                local_id=payout.pk,
                detail=str(exc),
            )
            continue
        payout.refresh_from_db(fields=["status", "amount_reversed"])
        if remote.amount_reversed > before[1]:
            detail = f"gateway reversed {remote.amount_reversed}, local {before[1]} ({before[0]})"
        else:
            detail = "transferred at the gateway, pending locally"
        _report(
            run,
            Kind.STATUS_MISMATCH,
            "transfer",
            gateway_id=remote.id,
            local_id=payout.pk,
            detail=detail,
            repaired=(payout.status, payout.amount_reversed) != before,
        )
    transferred = [Payout.Status.PAID, *Payout.REVERSED_STATUSES]
    for payout in Payout.objects.filter(
        provider=provider, status__in=transferred, created_at__gte=since
    ).exclude(gateway_transfer_id__in=seen):
        _report(
            run,
            Kind.MISSING_AT_GATEWAY,
            "transfer",
            gateway_id=payout.gateway_transfer_id,
            local_id=payout.pk,
            detail="paid locally, not in the gateway's list",
        )
