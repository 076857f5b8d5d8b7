"""Gateway webhooks in our own words: `GatewayEvent`, with an `EventKind` the services
dispatch on, and the parser for Stripe's event shape, which both adapters speak (the sandbox
imitates Stripe). Each adapter's `parse_webhook(body)` returns a GatewayEvent; nothing past
the adapters reads a gateway's event types or payload fields (payments/services/webhooks.py
and webhook_batch.py take the parsed event).

Parsing is strict where a wrong value would move money: an intent's amount and currency,
a transfer's `amount_reversed` (TransferReversalInvalid), the ids. A payload that cannot be
parsed raises (KeyError, TypeError, ValueError), and the one-by-one processing records the
error on the inbox row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from payments.exceptions import TransferReversalInvalid
from payments.gateways.base import IntentResult, RefundResult, TransferResult, next_action_from


class EventKind(StrEnum):
    PAYMENT_UPDATED = "payment_updated"  # a payment (intent) has a new state: `intent`
    REFUND_UPDATED = "refund_updated"  # one refund we asked for: `refunds[0]`, must be ours
    CHARGE_REFUNDED = "charge_refunded"  # a charge's refunds: `refunds`, ours among them
    TRANSFER_UPDATED = "transfer_updated"  # a payout's transfer, reversals included
    CHARGE_DISPUTED = "charge_disputed"  # the card holder disputed the charge: `dispute`
    DISPUTE_CLOSED = "dispute_closed"  # the gateway closed that dispute: `dispute`
    UNHANDLED = "unhandled"  # a type we do not act on


@dataclass(frozen=True)
class PaymentRef:
    """How to find our payment for an object: the id we put in its metadata, else the
    gateway's ids (its payment intent, its charge)."""

    payment_id: int | None = None
    intent_id: str = ""
    charge_id: str = ""


@dataclass(frozen=True)
class DisputeInfo:
    id: str
    reason: str
    status: str  # the gateway's: needs_response, won, lost, warning_closed, ...


@dataclass(frozen=True)
class GatewayEvent:
    kind: EventKind
    type: str  # the gateway's own type, for logs
    object_id: str = ""
    payment: PaymentRef | None = None
    intent: IntentResult | None = None
    refunds: tuple[RefundResult, ...] = ()
    transfer: TransferResult | None = None
    dispute: DisputeInfo | None = None
    # Our ids from the object's metadata: payment_id, refund_id, payout_id (ints), if any.
    local_ids: dict = field(default_factory=dict)


def metadata_id(metadata, name: str) -> int | None:
    """An id of ours from a gateway object's metadata, if it is an integer."""
    value = (metadata or {}).get(name) if isinstance(metadata, dict) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_KINDS = {
    "payment_intent.created": EventKind.PAYMENT_UPDATED,
    "payment_intent.processing": EventKind.PAYMENT_UPDATED,
    "payment_intent.requires_action": EventKind.PAYMENT_UPDATED,
    "payment_intent.amount_capturable_updated": EventKind.PAYMENT_UPDATED,
    "payment_intent.succeeded": EventKind.PAYMENT_UPDATED,
    "payment_intent.payment_failed": EventKind.PAYMENT_UPDATED,
    "payment_intent.canceled": EventKind.PAYMENT_UPDATED,
    "refund.created": EventKind.REFUND_UPDATED,
    "refund.updated": EventKind.REFUND_UPDATED,
    "refund.failed": EventKind.REFUND_UPDATED,
    "charge.refunded": EventKind.CHARGE_REFUNDED,
    "transfer.created": EventKind.TRANSFER_UPDATED,
    "transfer.updated": EventKind.TRANSFER_UPDATED,
    "transfer.reversed": EventKind.TRANSFER_UPDATED,
    "charge.dispute.created": EventKind.CHARGE_DISPUTED,
    "charge.dispute.closed": EventKind.DISPUTE_CLOSED,
}
# The types a worker may apply in a batch (payments/services/webhook_batch.py): a payment's
# success, the commonest event by far.
BATCHABLE_TYPES = frozenset({"payment_intent.succeeded"})


def parse_stripe_shaped(body, *, type: str | None = None) -> GatewayEvent:
    """A Stripe-shaped event (bytes, str or the decoded dict) as a GatewayEvent. `type`: the
    event's type as the inbox row stored it (the column is what processing goes by)."""
    event = json.loads(body) if isinstance(body, (bytes, str)) else body
    event_type = type if type is not None else str(event.get("type") or "")
    kind = _KINDS.get(event_type, EventKind.UNHANDLED)
    obj = event["data"]["object"]
    metadata = obj.get("metadata") or {}
    local_ids = {
        name: value
        for name in ("payment_id", "refund_id", "payout_id")
        if (value := metadata_id(metadata, name)) is not None
    }
    # Every event says which payment it concerns, if any (an unhandled charge.succeeded too):
    # the batch path keeps two events about one payment in order.
    common = {
        "kind": kind,
        "type": event_type,
        "object_id": str(obj.get("id") or ""),
        "payment": _payment_ref(obj),
        "local_ids": local_ids,
    }
    if kind == EventKind.PAYMENT_UPDATED:
        return GatewayEvent(**common, intent=_intent(obj))
    if kind == EventKind.REFUND_UPDATED:
        return GatewayEvent(**common, refunds=(_refund(obj),))
    if kind == EventKind.CHARGE_REFUNDED:
        items = (obj.get("refunds") or {}).get("data") or []
        return GatewayEvent(**common, refunds=tuple(_refund(item) for item in items))
    if kind == EventKind.TRANSFER_UPDATED:
        return GatewayEvent(**common, transfer=_transfer(obj))
    if kind in (EventKind.CHARGE_DISPUTED, EventKind.DISPUTE_CLOSED):
        dispute = DisputeInfo(
            id=str(obj.get("id") or "")[:255],
            reason=str(obj.get("reason") or "")[:64],
            status=str(obj.get("status") or "")[:32],
        )
        return GatewayEvent(**common, dispute=dispute)
    return GatewayEvent(**common)


def _payment_ref(obj: dict) -> PaymentRef:
    intent = obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    charge = obj.get("charge") or (obj.get("id") if obj.get("object") == "charge" else None)
    return PaymentRef(
        payment_id=metadata_id(obj.get("metadata"), "payment_id"),
        intent_id=intent if isinstance(intent, str) else "",
        charge_id=charge if isinstance(charge, str) else "",
    )


def _intent(obj: dict) -> IntentResult:
    error = obj.get("last_payment_error") or {}
    charge = obj.get("latest_charge")
    return IntentResult(
        id=obj["id"],
        status=obj.get("status", ""),
        amount=int(obj.get("amount") or 0),
        currency=obj.get("currency", ""),
        charge_id=(charge.get("id") if isinstance(charge, dict) else charge) or "",
        amount_received=int(obj.get("amount_received") or 0),
        failure_code=error.get("decline_code") or error.get("code") or "",
        failure_message=error.get("message") or "",
        metadata=obj.get("metadata") or {},
        next_action=next_action_from(obj),
        client_secret=obj.get("client_secret") or "",
    )


def _refund(obj: dict) -> RefundResult:
    return RefundResult(
        id=obj["id"],
        status=obj.get("status", ""),
        amount=int(obj.get("amount") or 0),
        currency=obj.get("currency", ""),
        metadata=obj.get("metadata") or {},
    )


def _transfer(obj: dict) -> TransferResult:
    return TransferResult(
        id=obj["id"],
        amount=int(obj.get("amount") or 0),
        currency=obj.get("currency", ""),
        destination=str(obj.get("destination") or ""),
        reversed=bool(obj.get("reversed")),
        amount_reversed=_int(obj.get("amount_reversed")),
        metadata=obj.get("metadata") or {},
    )


def _int(value) -> int:
    """An integer field of a gateway object; anything else is a payload we refuse to apply."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransferReversalInvalid(f"amount_reversed {value!r} is not an integer")
    return value
