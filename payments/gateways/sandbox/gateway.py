"""The sandbox gateway itself: deterministic outcomes per test token (see __init__)."""

import secrets
import time
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction

from payments.gateways import events
from payments.gateways.base import (
    GatewayTimeout,
    IntentResult,
    InvalidRequest,
    MethodInfo,
)
from payments.gateways.sandbox.delivery import Delivery, schedule
from payments.gateways.sandbox.money_out import SandboxMoneyOut
from payments.gateways.sandbox.records import _new_id, _public

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


class SandboxGateway(SandboxMoneyOut):
    name = "sandbox"
    # The sandbox sends Stripe-shaped events (signed the same way).
    parse_webhook = staticmethod(events.parse_stripe_shaped)

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
