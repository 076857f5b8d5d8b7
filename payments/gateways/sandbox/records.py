"""The sandbox's own records and plumbing: its objects (SandboxObject rows, idempotent by
key), the events it sends (signed, Stripe-shaped, delivered by delivery.py), the faults a test
can inject, and the Stripe-shaped results it answers with. The gateway (gateway.py) and its
money-out half (money_out.py) stand on this."""

import json
import secrets
import time

from django.conf import settings
from django.db import IntegrityError, transaction

from payments.gateways.base import (
    CardDeclined,
    Gateway,
    GatewayUnavailable,
    IntentResult,
    InvalidRequest,
    RefundResult,
    TransferResult,
    next_action_from,
)
from payments.gateways.sandbox.delivery import Delivery, schedule, take_fault
from payments.signatures import sign


def _new_id(prefix: str) -> str:
    return f"{prefix}_sbx_{secrets.token_hex(12)}"


class SandboxRecords(Gateway):
    """The records and plumbing every sandbox operation uses."""

    def _store(self, *, kind: str, data: dict, idempotency_key: str | None):
        from payments.models import SandboxObject

        try:
            with transaction.atomic():
                return SandboxObject.objects.create(
                    object_id=data["id"], kind=kind, idempotency_key=idempotency_key, data=data
                ), True
        except IntegrityError:
            return SandboxObject.objects.get(idempotency_key=idempotency_key), False

    def _by_key(self, idempotency_key: str):
        from payments.models import SandboxObject

        return SandboxObject.objects.filter(idempotency_key=idempotency_key).first()

    def _get(self, object_id: str, kind: str):
        from payments.models import SandboxObject

        obj = SandboxObject.objects.filter(object_id=object_id, kind=kind).first()
        if obj is None:
            raise InvalidRequest(f"No such {kind}: {object_id}", code="resource_missing")
        return obj

    def _save(self, obj) -> None:
        obj.save(update_fields=["data", "updated_at"])

    def _event(self, type: str, data: dict) -> None:
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "type": type,
            "created": int(time.time()),
            "livemode": False,
            "api_version": "sandbox",
            "data": {"object": data},
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        header = sign(body, settings.SANDBOX_WEBHOOK_SECRET.split(",")[0].strip())
        schedule(Delivery(kind="webhook", body=body, header=header))

    def _fault(self, operation: str, behaviour: str = "ok", key: str = "") -> str | None:
        injected = take_fault(operation)
        if injected:
            return injected
        if behaviour == "server_error_always":
            return "server_error"
        if behaviour in ("timeout", "server_error") and key:
            marker = f"fault:{behaviour}:{key}"
            _, first = self._store(kind="fault", data={"id": marker}, idempotency_key=marker)
            return behaviour if first else None
        return None

    @staticmethod
    def _raise_before(fault: str | None) -> None:
        if fault == "server_error":
            raise GatewayUnavailable("sandbox: internal error", code="api_error", http_status=500)
        if fault == "rate_limited":
            raise GatewayUnavailable("sandbox: rate limited", code="rate_limit", http_status=429)

    @staticmethod
    def _replay_error(data: dict) -> None:
        error = data.get("_error")
        if error:
            raise CardDeclined(error["message"], code=error["code"], http_status=402)

    @staticmethod
    def _intent(data: dict) -> IntentResult:
        error = data.get("last_payment_error") or {}
        return IntentResult(
            id=data["id"],
            status=data["status"],
            amount=data["amount"],
            currency=data["currency"],
            charge_id=data.get("latest_charge") or "",
            amount_received=data.get("amount_received", 0),
            failure_code=error.get("code", ""),
            failure_message=error.get("message", ""),
            metadata=data.get("metadata", {}),
            next_action=next_action_from(data),
            client_secret=data.get("client_secret") or "",
        )


def _public(data: dict) -> dict:
    return {key: value for key, value in data.items() if not key.startswith("_")}


def _refund_result(data: dict) -> RefundResult:
    return RefundResult(
        id=data["id"],
        status=data["status"],
        amount=data["amount"],
        currency=data["currency"],
        payment_id=data.get("payment_intent") or "",
        charge_id=data.get("charge") or "",
        metadata=data.get("metadata", {}),
    )


def _transfer_result(data: dict) -> TransferResult:
    return TransferResult(
        id=data["id"],
        amount=data["amount"],
        currency=data["currency"],
        destination=data["destination"],
        transfer_group=data.get("transfer_group") or "",
        source_transaction=data.get("source_transaction") or "",
        reversed=bool(data.get("reversed")),
        amount_reversed=int(data.get("amount_reversed") or 0),
        metadata=data.get("metadata", {}),
    )
