"""The sandbox's money out and its after-the-fact events: refunds, Connect transfers and
their reversals, charge disputes, and the lists reconciliation reads."""

import time

from django.db import transaction

from payments.gateways.base import (
    GatewayTimeout,
    IntentResult,
    InvalidRequest,
    RefundResult,
    TransferResult,
)
from payments.gateways.sandbox.records import (
    SandboxRecords,
    _new_id,
    _public,
    _refund_result,
    _transfer_result,
)


class SandboxMoneyOut(SandboxRecords):
    def refund(self, *, payment_id, amount, metadata, idempotency_key) -> RefundResult:
        fault = self._fault("refund")
        self._raise_before(fault)
        existing = self._by_key(idempotency_key)
        if existing is None:
            with transaction.atomic():
                intent = self._get(payment_id, "payment_intent")
                left = intent.data["amount_received"] - intent.data.get("amount_refunded", 0)
                if intent.data["status"] != "succeeded":
                    raise InvalidRequest("Only a succeeded payment can be refunded.")
                if amount > left:
                    raise InvalidRequest(
                        f"Refund amount ({amount}) is greater than what is left ({left}).",
                        code="amount_too_large",
                    )
                data = {
                    "id": _new_id("re"),
                    "object": "refund",
                    "amount": amount,
                    "currency": intent.data["currency"],
                    "status": "succeeded",
                    "payment_intent": payment_id,
                    "charge": intent.data["latest_charge"],
                    "metadata": dict(metadata),
                    "created": int(time.time()),
                }
                existing, created = self._store(
                    kind="refund", data=data, idempotency_key=idempotency_key
                )
                if created:
                    intent.data["amount_refunded"] = intent.data.get("amount_refunded", 0) + amount
                    self._save(intent)
            if created:
                self._event("refund.created", data)
        if fault == "timeout":
            raise GatewayTimeout("sandbox: timed out", code="timeout")
        return _refund_result(existing.data)

    def retrieve_refund(self, *, refund_id: str) -> RefundResult:
        return _refund_result(self._get(refund_id, "refund").data)

    def transfer(
        self,
        *,
        amount,
        currency,
        destination,
        source_transaction,
        transfer_group,
        metadata,
        idempotency_key,
    ) -> TransferResult:
        fault = self._fault("transfer")
        self._raise_before(fault)
        existing = self._by_key(idempotency_key)
        if existing is None:
            if not destination.startswith("acct_"):
                raise InvalidRequest("No such destination account.", code="resource_missing")
            data = {
                "id": _new_id("tr"),
                "object": "transfer",
                "amount": amount,
                "currency": currency,
                "destination": destination,
                "source_transaction": source_transaction,
                "transfer_group": transfer_group,
                "amount_reversed": 0,
                "reversals": {"object": "list", "data": [], "has_more": False, "total_count": 0},
                "reversed": False,
                "metadata": dict(metadata),
                "created": int(time.time()),
            }
            existing, created = self._store(
                kind="transfer", data=data, idempotency_key=idempotency_key
            )
            if created:
                self._event("transfer.created", data)
        if fault == "timeout":
            raise GatewayTimeout("sandbox: timed out", code="timeout")
        return _transfer_result(existing.data)

    def reverse_transfer(self, *, transfer_id: str, amount: int | None = None) -> dict:
        """Simulate the platform (or Stripe, for a dispute on the source charge) taking back
        `amount` of a transfer (default: all that is left), as Stripe's POST
        /v1/transfers/<id>/reversals does; sends transfer.reversed with the updated transfer,
        for a partial reversal too. More than what is left is refused (400) and changes
        nothing."""
        with transaction.atomic():
            obj = self._get(transfer_id, "transfer")
            data = obj.data
            left = data["amount"] - int(data.get("amount_reversed") or 0)
            amount = left if amount is None else amount
            if not 0 < amount <= left:
                raise InvalidRequest(
                    f"Reversal amount ({amount}) must be between 1 and what is left ({left}).",
                    code="amount_too_large" if amount > left else "parameter_invalid_integer",
                )
            reversal = {
                "id": _new_id("trr"),
                "object": "transfer_reversal",
                "amount": amount,
                "currency": data["currency"],
                "transfer": data["id"],
                "metadata": {},
                "created": int(time.time()),
            }
            reversals = data.setdefault(
                "reversals", {"object": "list", "data": [], "has_more": False, "total_count": 0}
            )
            reversals["data"].append(reversal)
            reversals["total_count"] = len(reversals["data"])
            data["amount_reversed"] = data["amount"] - left + amount
            data["reversed"] = data["amount_reversed"] == data["amount"]
            self._save(obj)
        self._event("transfer.reversed", _public(data))
        return reversal

    def open_dispute(self, *, payment_id: str, reason: str = "fraudulent") -> dict:
        """Simulate the cardholder disputing the charge (sends charge.dispute.created)."""
        intent = self._get(payment_id, "payment_intent").data
        data = {
            "id": _new_id("dp"),
            "object": "dispute",
            "amount": intent["amount_received"],
            "currency": intent["currency"],
            "charge": intent["latest_charge"],
            "payment_intent": payment_id,
            "reason": reason,
            "status": "needs_response",
            "created": int(time.time()),
        }
        self._store(kind="dispute", data=data, idempotency_key=None)
        self._event("charge.dispute.created", data)
        return data

    def _list(self, kind: str, created_since: int, limit: int) -> list[dict]:
        from payments.models import SandboxObject

        rows = SandboxObject.objects.filter(kind=kind).order_by("id")
        return [row.data for row in rows if row.data.get("created", 0) >= created_since][:limit]

    def list_payments(self, *, created_since: int, limit: int = 100) -> list[IntentResult]:
        return [self._intent(d) for d in self._list("payment_intent", created_since, limit)]

    def list_refunds(self, *, created_since: int, limit: int = 100) -> list[RefundResult]:
        return [_refund_result(d) for d in self._list("refund", created_since, limit)]

    def list_transfers(self, *, created_since: int, limit: int = 100) -> list[TransferResult]:
        return [_transfer_result(d) for d in self._list("transfer", created_since, limit)]

    def payout_destination_for(self, *, user) -> str:
        # Every sandbox user has a connected account; Stripe needs a real one (PayoutAccount).
        return super().payout_destination_for(user=user) or f"acct_sbx_{user.pk}"
