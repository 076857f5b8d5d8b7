"""Gateway webhooks in: the ingest path (verify, one insert, one enqueue) and the processing
that turns an event into effects, once, whatever the order or number of deliveries."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from escrow import reactions
from escrow import services as escrow_services
from escrow.exceptions import IllegalTransition
from payments import enqueue, signatures
from payments.calls import retry_delay
from payments.exceptions import (
    PaymentNotFound,
    TransferReversalInvalid,
    UnknownObject,
    WebhookRejected,
)
from payments.gateways import PROVIDERS, EventKind, GatewayEvent, parse_webhook
from payments.gateways.events import PaymentRef, metadata_id
from payments.locks import payment_for_update
from payments.models import Payment, Payout, Refund, WebhookEvent
from payments.services import intents, payouts, refunds
from payments.services._events import operator_ids, operators_email, payment_data
from realtime.events import emit, sequencing_deferred

logger = logging.getLogger(__name__)

_INSERT = None


def _insert_sql() -> str:
    global _INSERT
    if _INSERT is None:
        table = connection.ops.quote_name(WebhookEvent._meta.db_table)
        payload = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        # Only our own table name is interpolated; every value is a parameter.
        columns = "provider, event_id, type, payload, status, attempts, last_error, received_at"
        values = f"%s, %s, %s, {payload}, 'received', 0, '', %s"
        _INSERT = (
            f"INSERT INTO {table} ({columns}) VALUES ({values}) "  # noqa: S608
            "ON CONFLICT (provider, event_id) DO NOTHING RETURNING id"
        )
    return _INSERT


def webhook_receive(
    *, provider: str, body: bytes, signature_header: str | None
) -> tuple[int | None, bool]:
    """Verify a delivery, store it in the inbox and enqueue its processing.

    Returns (inbox row id, created); a duplicate returns (None, False) and does nothing else.
    Raises WebhookRejected (400) for a missing or wrong signature, a timestamp outside the
    tolerance, an oversized body, or a body that is not a JSON event; nothing is stored then.
    One INSERT ... ON CONFLICT DO NOTHING in autocommit: when it returns, the row is committed,
    so the caller may answer 2xx."""
    if provider not in PROVIDERS:
        raise WebhookRejected("Unknown provider.")
    if len(body) > settings.PAYMENTS_WEBHOOK_MAX_BYTES:
        raise WebhookRejected("The body is too large.")
    signatures.verify(body=body, header=signature_header, secrets=signatures.secrets_for(provider))
    event = signatures.parse_event(body)
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_sql(),
            [provider, event["id"], event["type"], body.decode(), timezone.now()],
        )
        row = cursor.fetchone()
    if row is None:
        return None, False
    event_row_id = row[0]
    transaction.on_commit(lambda: enqueue.enqueue_webhook(event_row_id))
    return event_row_id, True


def webhook_process(*, webhook_event_id: int) -> str | None:
    """Apply one inbox event, once. The inbox row is locked for the whole transaction, so two
    runs of the task (a redelivery) serialise and the second finds it processed. The effect
    and the processed mark commit together: a crash before the commit leaves the event to be
    processed again, and the effects themselves are idempotent (state machines moving forward
    only, unique ledger references). Objects we do not know yet park the event for a retry;
    an unexpected error rolls the effect back and parks it too (failed after the maximum), so a
    poison event shows in the admin instead of being retried forever."""
    try:
        return _process(webhook_event_id)
    except Exception as exc:
        logger.exception("webhook processing failed", extra={"webhook_event": webhook_event_id})
        return _park(webhook_event_id, f"{type(exc).__name__}: {exc}")


def _park(webhook_event_id: int, error: str) -> str | None:
    with transaction.atomic(durable=True):
        row = WebhookEvent.objects.select_for_update().filter(pk=webhook_event_id).first()
        if row is None or row.status not in (
            WebhookEvent.Status.RECEIVED,
            WebhookEvent.Status.PARKED,
        ):
            return row.status if row else None
        row.attempts += 1
        if row.attempts >= settings.PAYMENTS_WEBHOOK_MAX_ATTEMPTS:
            row.status = WebhookEvent.Status.FAILED
            row.next_attempt_at = None
        else:
            row.status = WebhookEvent.Status.PARKED
            row.next_attempt_at = timezone.now() + timedelta(seconds=retry_delay(row.attempts))
        row.last_error = error[:255]
        row.save(update_fields=["status", "attempts", "next_attempt_at", "last_error"])
        return row.status


def webhook_process_many(*, webhook_event_ids: list[int]) -> int:
    """Process several inbox rows (the batched hand-off's task): the plain payment successes
    together in one transaction (payments/services/webhook_batch.py), the rest one by one,
    each in its own transaction; then number and publish all their events in one sequencer
    pass. Rows another worker's transaction holds are handed to a new task a moment later
    (with a broker) rather than waited for; that worker has most likely applied them by then."""
    from payments.services.webhook_batch import webhook_process_batch

    left, busy = webhook_event_ids, []
    with sequencing_deferred():
        if settings.PAYMENTS_WEBHOOK_BATCH_APPLY:
            left, busy = webhook_process_batch(webhook_event_ids)
        if busy and not enqueue.enqueue_busy(busy):
            left = sorted([*left, *busy])
        for webhook_event_id in left:
            webhook_process(webhook_event_id=webhook_event_id)
    return len(webhook_event_ids)


def _process(webhook_event_id: int) -> str | None:
    with transaction.atomic(durable=True):
        return _process_locked(webhook_event_id)


def _process_locked(webhook_event_id: int) -> str | None:
    """Caller holds the transaction; the row's lock lasts until it commits."""
    row = WebhookEvent.objects.select_for_update().filter(pk=webhook_event_id).first()
    if row is None or row.status not in (
        WebhookEvent.Status.RECEIVED,
        WebhookEvent.Status.PARKED,
    ):
        return row.status if row else None
    row.attempts += 1
    try:
        # No savepoint: handlers raise UnknownObject before they write anything, and any
        # other error rolls the whole event back to be retried.
        applied = apply_event(row)
        row.status = WebhookEvent.Status.PROCESSED if applied else WebhookEvent.Status.IGNORED
        row.processed_at = timezone.now()
        row.next_attempt_at = None
        row.last_error = ""
    except TransferReversalInvalid as exc:
        # The handler's own savepoint rolled its writes back. The payload will not change on
        # a retry, so the event fails at once and shows in the admin for an operator.
        logger.warning("webhook refused", extra={"webhook_event": webhook_event_id})
        row.status = WebhookEvent.Status.FAILED
        row.next_attempt_at = None
        row.last_error = f"{exc.code}: {exc}"[:255]
    except UnknownObject as exc:
        if row.attempts >= settings.PAYMENTS_WEBHOOK_MAX_ATTEMPTS:
            row.status = WebhookEvent.Status.FAILED
        else:
            row.status = WebhookEvent.Status.PARKED
            row.next_attempt_at = timezone.now() + timedelta(seconds=retry_delay(row.attempts))
        row.last_error = str(exc)[:255]
    row.save(update_fields=["status", "attempts", "processed_at", "next_attempt_at", "last_error"])
    return row.status


def apply_event(row: WebhookEvent) -> bool:
    """Run the event's handler; whether it changed anything. Caller holds the row's lock and
    the transaction. Raises what the handler raises (UnknownObject, TransferReversalInvalid,
    ...), and the caller's transaction rolls its writes back."""
    payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
    event = parse_webhook(row.provider, payload, type=row.type)
    handler = HANDLERS.get(event.kind)
    if handler is None:
        return False
    return handler(row.provider, event) is not False


def webhooks_due(*, now=None, batch_size: int = 200) -> list[int]:
    """Beat: enqueue parked events whose retry time has come, and received ones that were
    never processed (a lost enqueue)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=60)
    ids = list(
        WebhookEvent.objects.filter(status=WebhookEvent.Status.PARKED, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch_size]
    )
    ids += list(
        WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED, received_at__lt=stale)
        .order_by("id")
        .values_list("pk", flat=True)[:batch_size]
    )
    for event_row_id in ids:
        enqueue.enqueue_webhook(event_row_id)
    return ids


# --- Handlers: (provider, GatewayEvent) -> False when there was nothing to do --------------


def _find_payment_id(provider: str, ref: PaymentRef) -> int:
    """Our payment for a gateway object: by the id in its metadata (one indexed lookup, no
    query when the row is then locked anyway), else by the gateway's ids."""
    if ref.payment_id is not None:
        return ref.payment_id
    payments = Payment.objects.filter(provider=provider)
    if ref.intent_id:
        found = (
            payments.filter(gateway_payment_id=ref.intent_id).values_list("pk", flat=True).first()
        )
        if found:
            return found
    if ref.charge_id:
        found = (
            payments.filter(gateway_charge_id=ref.charge_id).values_list("pk", flat=True).first()
        )
        if found:
            return found
    raise UnknownObject(f"no payment for {ref.intent_id or ref.charge_id or 'an object'}")


def _lock_payment(provider: str, event: GatewayEvent) -> Payment:
    """Find and lock (project → milestone → payment) the payment an event is about. An id in
    the metadata that is not ours for this provider falls back to the gateway's ids."""
    ref = event.payment or PaymentRef()
    try:
        payment = payment_for_update(payment_id=_find_payment_id(provider, ref))
    except PaymentNotFound:
        payment = None
    if payment is None or payment.provider != provider:
        stripped = replace(ref, payment_id=None)
        payment = payment_for_update(payment_id=_find_payment_id(provider, stripped))
    return payment


def _on_payment(provider: str, event: GatewayEvent) -> bool:
    payment = _lock_payment(provider, event)
    return intents.apply_intent(payment, event.intent, followup=True)


def _apply_refund(provider: str, result) -> bool:
    refund_id = metadata_id(result.metadata, "refund_id")
    refund = None
    if refund_id is not None:
        refund = Refund.objects.filter(pk=refund_id, payment__provider=provider).first()
    if refund is None and result.id:
        refund = Refund.objects.filter(gateway_refund_id=result.id).first()
    if refund is None:
        raise UnknownObject(f"no refund for {result.id}")
    before = refund.status
    return refunds.refund_apply(refund_id=refund.pk, result=result).status != before


def _on_refund(provider: str, event: GatewayEvent) -> bool:
    return _apply_refund(provider, event.refunds[0])


def _on_charge_refunded(provider: str, event: GatewayEvent) -> bool:
    changed = False
    for result in event.refunds:
        try:
            changed |= _apply_refund(provider, result)
        except UnknownObject:
            continue
    return changed


def _on_transfer(provider: str, event: GatewayEvent) -> bool:
    result = event.transfer
    payout_id = metadata_id(result.metadata, "payout_id")
    payout = Payout.objects.filter(pk=payout_id, provider=provider).first() if payout_id else None
    if payout is None and result.id:
        payout = Payout.objects.filter(gateway_transfer_id=result.id).first()
    if payout is None:
        raise UnknownObject(f"no payout for {result.id}")
    before = (payout.status, payout.amount_reversed)
    payouts.payout_apply(payout_id=payout.pk, result=result)
    payout.refresh_from_db(fields=["status", "amount_reversed"])
    return (payout.status, payout.amount_reversed) != before


def _on_dispute_created(provider: str, event: GatewayEvent) -> bool:
    """The cardholder disputed the charge: freeze the milestone's escrow and tell operators."""
    payment = _lock_payment(provider, event)
    dispute = event.dispute
    frozen = True
    try:
        escrow_services.milestone_freeze(
            milestone_id=payment.milestone_id,
            reason=f"gateway dispute {dispute.id} ({dispute.reason or 'unknown'})",
        )
    except IllegalTransition:
        frozen = False
        logger.warning(
            "dispute on a milestone that cannot be frozen", extra={"payment_id": payment.pk}
        )
    reactions.charge_disputed.fire(
        reactions.ChargeDisputed(
            payment_id=payment.pk,
            milestone_id=payment.milestone_id,
            dispute_id=dispute.id,
            reason=dispute.reason,
            frozen=frozen,
        )
    )
    operators = operator_ids()
    emit(
        "payment.disputed",
        payment_data(payment, dispute_id=dispute.id or None, reason=dispute.reason),
        aggregate=("payment", payment.pk),
        audience=[*operators, *payment.party_ids()],
        channels=[f"payment.{payment.pk}", f"milestone.{payment.milestone_id}"],
    )
    operators_email(
        operators=operators,
        subject=f"Charge dispute on payment {payment.pk}",
        message=(
            f"The gateway reports dispute {dispute.id} ({dispute.reason or 'unknown'}) on "
            f"payment {payment.pk}; milestone {payment.milestone_id} is frozen."
        ),
    )
    return True


# Stripe's closed disputes that leave the money with the merchant: won, or an inquiry
# ("warning") closed without becoming a chargeback. A lost one stays frozen for an operator.
_DISPUTE_CLOSED_IN_OUR_FAVOUR = frozenset({"won", "warning_closed"})


def _on_dispute_closed(provider: str, event: GatewayEvent) -> bool:
    """The gateway closed a charge dispute: in the merchant's favour the freeze is lifted
    (the milestone goes back to the status it had before); otherwise operators decide."""
    payment = _lock_payment(provider, event)
    dispute = event.dispute
    unfrozen = False
    if dispute.status not in _DISPUTE_CLOSED_IN_OUR_FAVOUR:
        logger.warning(
            "charge dispute closed against us; the milestone stays frozen",
            extra={"payment_id": payment.pk, "dispute_status": dispute.status},
        )
    else:
        milestone = escrow_services.milestone_unfreeze(
            milestone_id=payment.milestone_id,
            reason=f"gateway dispute {dispute.id} closed: {dispute.status}",
        )
        unfrozen = milestone.status != "disputed"
    reactions.charge_dispute_closed.fire(
        reactions.ChargeDisputeClosed(
            payment_id=payment.pk,
            milestone_id=payment.milestone_id,
            dispute_id=dispute.id,
            status=dispute.status,
            unfrozen=unfrozen,
        )
    )
    return unfrozen


# What each of our event kinds does; EventKind.UNHANDLED (and any kind not here) is ignored.
HANDLERS = {
    EventKind.PAYMENT_UPDATED: _on_payment,
    EventKind.REFUND_UPDATED: _on_refund,
    EventKind.CHARGE_REFUNDED: _on_charge_refunded,
    EventKind.TRANSFER_UPDATED: _on_transfer,
    EventKind.CHARGE_DISPUTED: _on_dispute_created,
    EventKind.DISPUTE_CLOSED: _on_dispute_closed,
}
