"""The sandbox gateway itself: deterministic outcomes per test token (see __init__)."""

import json
import secrets
import time
from urllib.parse import urlencode

from django.conf import settings
from django.db import IntegrityError, transaction

from payments.gateways import events
from payments.gateways.base import (
    CardDeclined,
    Gateway,
    GatewayTimeout,
    GatewayUnavailable,
    IntentResult,
    InvalidRequest,
    MethodInfo,
    RefundResult,
    TransferResult,
    next_action_from,
)
from payments.gateways.sandbox.delivery import Delivery, schedule, take_fault
from payments.signatures import sign

# token -> (brand, last4, behaviour)
CARDS = {
    "pm_card_visa": ("visa", "4242", "ok"),
    "pm_card_mastercard": ("mastercard", "4444", "ok"),
    "pm_card_amex": ("amex", "8431", "ok"),
    "pm_card_chargeDeclined": ("visa", "0002", "card_declined"),
    "pm_card_visa_chargeDeclined": ("visa", "0002", "card_declined"),
    "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "insufficient_funds"),
    "pm_card_authenticationRequired": ("visa", "3184", "authentication"),
    "pm_card_timeout": ("visa", "0101", "timeout"),
    "pm_card_serverError": ("visa", "0119", "server_error"),
    "pm_card_serverErrorAlways": ("visa", "0127", "server_error_always"),
}
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


def challenge_url(payment_id: str, client_secret: str) -> str:
    """The sandbox's 3-D Secure page for an intent (a path on our own site); the client secret
    in it is what lets the page act (only the payer is given the URL)."""
    return f"/sandbox/3ds/{payment_id}/?{urlencode({'client_secret': client_secret})}"


def _new_id(prefix: str) -> str:
    return f"{prefix}_sbx_{secrets.token_hex(12)}"


class SandboxGateway(Gateway):
    name = "sandbox"
    # The sandbox sends Stripe-shaped events (signed the same way).
    parse_webhook = staticmethod(events.parse_stripe_shaped)

    # --- records --------------------------------------------------------------------------

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

    # --- the interface ----------------------------------------------------------------------

    def describe_method(self, *, token: str) -> MethodInfo:
        card = CARDS.get(token)
        if card is None:
            raise InvalidRequest(f"No such PaymentMethod: {token!r}", code="resource_missing")
        brand, last4, _ = card
        return MethodInfo(token=token, brand=brand, last4=last4, exp_month=12, exp_year=2034)

    def create_payment(
        self,
        *,
        amount,
        currency,
        payment_method,
        capture_method,
        metadata,
        idempotency_key,
        customer="",
    ) -> IntentResult:
        card = CARDS.get(payment_method)
        behaviour = card[2] if card else "ok"
        fault = self._fault("authorize", behaviour, idempotency_key)
        self._raise_before(fault)
        existing = self._by_key(idempotency_key)
        if existing is not None:
            self._replay_error(existing.data)
            return self._intent(existing.data)
        if card is None:
            raise InvalidRequest(
                f"No such PaymentMethod: {payment_method!r}", code="resource_missing"
            )
        data = {
            "id": _new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "capture_method": capture_method,
            "payment_method": payment_method,
            "metadata": dict(metadata),
            "latest_charge": None,
            "amount_received": 0,
            "amount_refunded": 0,
            "last_payment_error": None,
            "created": int(time.time()),
        }
        if behaviour in DECLINE_MESSAGES:
            data["status"] = "requires_payment_method"
            data["latest_charge"] = _new_id("ch")
            error = {"code": behaviour, "message": DECLINE_MESSAGES[behaviour]}
            data["last_payment_error"] = error
            data["_error"] = error
        elif behaviour == "authentication":
            data["status"] = "requires_action"
            data["client_secret"] = f"{data['id']}_secret_{secrets.token_hex(12)}"
            # Like Stripe's redirect_to_url: the card holder's browser goes to the sandbox's
            # challenge page (payments/gateways/sandbox/views.py), which passes or fails it.
            data["next_action"] = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": challenge_url(data["id"], data["client_secret"]),
                    "return_url": None,
                },
            }
        else:
            self._charge(data)
        obj, created = self._store(
            kind="payment_intent", data=data, idempotency_key=idempotency_key
        )
        if not created:
            self._replay_error(obj.data)
            return self._intent(obj.data)
        public = _public(data)
        if behaviour in DECLINE_MESSAGES:
            self._event("payment_intent.payment_failed", public)
        elif behaviour == "authentication":
            self._event("payment_intent.requires_action", public)
            if getattr(settings, "SANDBOX_AUTHENTICATION", "challenge") == "auto":
                schedule(Delivery(kind="authenticate", object_id=data["id"]))
        else:
            self._event_for_status(public)
        if fault == "timeout":
            raise GatewayTimeout("sandbox: timed out", code="timeout")
        self._replay_error(data)
        return self._intent(data)

    @staticmethod
    def _charge(data: dict) -> None:
        data["latest_charge"] = data.get("latest_charge") or _new_id("ch")
        if data["capture_method"] == "manual":
            data["status"] = "requires_capture"
        else:
            data["status"] = "succeeded"
            data["amount_received"] = data["amount"]

    def _event_for_status(self, public: dict) -> None:
        if public["status"] == "succeeded":
            self._event("payment_intent.succeeded", public)
        elif public["status"] == "requires_capture":
            self._event("payment_intent.amount_capturable_updated", public)

    def complete_authentication(self, *, payment_id: str) -> IntentResult:
        """The card holder passed 3-D Secure: the intent is authorized (or succeeds) and its
        webhook follows. Anything but requires_action is returned unchanged."""
        with transaction.atomic():
            obj = self._get_for_update(payment_id)
            if obj.data["status"] != "requires_action":
                return self._intent(obj.data)
            obj.data["next_action"] = None
            self._charge(obj.data)
            self._save(obj)
        self._event_for_status(_public(obj.data))
        return self._intent(obj.data)

    def fail_authentication(self, *, payment_id: str) -> IntentResult:
        """The card holder failed 3-D Secure: as at Stripe, the intent goes back to
        requires_payment_method with payment_intent_authentication_failure, and
        payment_intent.payment_failed follows. Anything but requires_action is unchanged."""
        with transaction.atomic():
            obj = self._get_for_update(payment_id)
            if obj.data["status"] != "requires_action":
                return self._intent(obj.data)
            obj.data["next_action"] = None
            obj.data["status"] = "requires_payment_method"
            obj.data["last_payment_error"] = {
                "code": "payment_intent_authentication_failure",
                "message": "The provided PaymentMethod has failed authentication.",
            }
            self._save(obj)
        self._event("payment_intent.payment_failed", _public(obj.data))
        return self._intent(obj.data)

    def authenticate(self, *, payment_id: str, client_secret: str, success: bool) -> IntentResult:
        """The challenge page's answer. The client secret proves the caller is the card
        holder's browser (as with Stripe); a wrong one is refused and changes nothing."""
        obj = self._get(payment_id, "payment_intent")
        expected = obj.data.get("client_secret") or ""
        if not expected or not secrets.compare_digest(expected, client_secret or ""):
            raise InvalidRequest("No such payment intent.", code="resource_missing")
        if success:
            return self.complete_authentication(payment_id=payment_id)
        return self.fail_authentication(payment_id=payment_id)

    def _get_for_update(self, object_id: str):
        from payments.models import SandboxObject

        obj = (
            SandboxObject.objects.select_for_update()
            .filter(object_id=object_id, kind="payment_intent")
            .first()
        )
        if obj is None:
            raise InvalidRequest(f"No such payment_intent: {object_id}", code="resource_missing")
        return obj

    def _mutate(self, operation: str, key: str, payment_id: str, change) -> IntentResult:
        fault = self._fault(operation)
        self._raise_before(fault)
        marker = self._by_key(key)
        obj = self._get(payment_id, "payment_intent")
        if marker is None:
            with transaction.atomic():
                obj = self._get(payment_id, "payment_intent")
                event_type = change(obj.data)
                self._save(obj)
                self._store(kind="request", data={"id": f"req:{key}"}, idempotency_key=key)
            if event_type:
                self._event(event_type, _public(obj.data))
        if fault == "timeout":
            raise GatewayTimeout("sandbox: timed out", code="timeout")
        return self._intent(obj.data)

    def capture_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        def change(data):
            if data["status"] == "succeeded":
                return None
            if data["status"] != "requires_capture":
                raise InvalidRequest(
                    f"This PaymentIntent is {data['status']}; it cannot be captured.",
                    code="payment_intent_unexpected_state",
                )
            data["status"] = "succeeded"
            data["amount_received"] = data["amount"]
            return "payment_intent.succeeded"

        return self._mutate("capture", idempotency_key, payment_id, change)

    def cancel_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        def change(data):
            if data["status"] == "canceled":
                return None
            if data["status"] in ("succeeded", "processing"):
                raise InvalidRequest(
                    f"This PaymentIntent is {data['status']}; it cannot be canceled.",
                    code="payment_intent_unexpected_state",
                )
            data["status"] = "canceled"
            data["next_action"] = None
            return "payment_intent.canceled"

        return self._mutate("cancel", idempotency_key, payment_id, change)

    def retrieve_payment(self, *, payment_id: str) -> IntentResult:
        return self._intent(self._get(payment_id, "payment_intent").data)

    def lookup_payment(self, *, idempotency_key: str) -> IntentResult | None:
        """What a create with this idempotency key did, if anything (None: nothing arrived)."""
        obj = self._by_key(idempotency_key)
        if obj is None or obj.kind != "payment_intent":
            return None
        self._replay_error(obj.data)
        return self._intent(obj.data)

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
