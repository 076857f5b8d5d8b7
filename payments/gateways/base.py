"""The gateway interface: what payments asks of any gateway, in our own terms.

Every mutating call takes an idempotency key derived from our own row (never one per call), so
repeating a call after a lost response returns the first result instead of doing it twice. The
result types carry Stripe's vocabulary for statuses (the sandbox speaks it too)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IntentResult:
    """A payment at the gateway (a Stripe PaymentIntent)."""

    id: str
    status: str  # requires_action | requires_capture | processing | succeeded | canceled | ...
    amount: int
    currency: str
    charge_id: str = ""
    amount_received: int = 0
    failure_code: str = ""
    failure_message: str = ""
    metadata: dict = field(default_factory=dict)
    # While status is requires_action: what the customer's browser must do, in our terms
    # (`next_action_from`), and the secret that lets it do it (Stripe.js takes the secret).
    next_action: dict = field(default_factory=dict)
    client_secret: str = ""


def next_action_from(obj: dict) -> dict:
    """A PaymentIntent's `next_action` (Stripe's shape, which the sandbox speaks too) as
    `{"type": ..., "redirect_url": ...}`: "use_stripe_sdk" is completed by Stripe.js
    (`stripe.handleNextAction`), "redirect_to_url" by sending the customer to the URL. The one
    place this shape is read, for the adapters' answers and for webhooks alike."""
    action = obj.get("next_action") if isinstance(obj, dict) else None
    if not isinstance(action, dict) or not action.get("type"):
        return {}
    result = {"type": str(action["type"])}
    redirect = action.get("redirect_to_url")
    if isinstance(redirect, dict) and redirect.get("url"):
        result["redirect_url"] = str(redirect["url"])
    return result


@dataclass(frozen=True)
class RefundResult:
    id: str
    status: str  # pending | succeeded | failed | canceled
    amount: int
    currency: str
    payment_id: str = ""
    charge_id: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TransferResult:
    id: str
    amount: int
    currency: str
    destination: str
    transfer_group: str = ""
    source_transaction: str = ""
    reversed: bool = False  # Stripe: true only once the whole amount is reversed
    amount_reversed: int = 0  # cumulative, partial reversals included
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """Display data for a payment-method token. Never a card number."""

    token: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None


class GatewayError(Exception):
    """A call did not succeed. `transient` errors (network, timeout, 429, 5xx) may be retried
    with backoff; the others are definitive answers and are never retried."""

    transient = False
    # True when the request may have been carried out although we got no answer (a timeout):
    # the outcome must be resolved with the same idempotency key before anything else.
    outcome_unknown = False

    def __init__(self, message: str = "", *, code: str = "", http_status: int | None = None):
        super().__init__(message or code or self.__class__.__name__)
        self.message = message or code or self.__class__.__name__
        self.code = code or "gateway_error"
        self.http_status = http_status


class CardDeclined(GatewayError):
    """The issuer said no (also insufficient funds). Never retried."""


class InvalidRequest(GatewayError):
    """The gateway refused the request itself (bad parameters, unknown object, auth)."""


class GatewayUnavailable(GatewayError):
    """Network error, 429 or 5xx: nothing was done, or it is safe to repeat with the same key."""

    transient = True


class GatewayTimeout(GatewayUnavailable):
    """No answer in time: the request may or may not have been carried out."""

    outcome_unknown = True


class Gateway:
    """The interface both adapters implement."""

    name = "gateway"
    # Whether payment methods live on a per-user customer object at the gateway (Stripe: a
    # PaymentMethod must be attached to a Customer to be charged more than once).
    uses_customers = False

    @staticmethod
    def parse_webhook(body, *, type: str | None = None):
        """A webhook's body (bytes, or the decoded JSON object the inbox stored, whose stored
        `type` then overrides the body's) as a
        payments.gateways.events.GatewayEvent in our own event kinds. No call, no instance
        state: the services parse stored events with the adapter class."""
        raise NotImplementedError

    def describe_method(self, *, token: str) -> MethodInfo:
        raise NotImplementedError

    def create_customer(self, *, email: str, metadata: dict, idempotency_key: str) -> str:
        """Create the user's customer object; returns its id."""
        raise NotImplementedError

    def attach_method(self, *, token: str, customer_id: str, idempotency_key: str) -> MethodInfo:
        """Attach a payment-method token to a customer. The returned `token` is the one to
        charge: Stripe turns a test token such as pm_card_visa into a new PaymentMethod."""
        raise NotImplementedError

    def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        capture_method: str,
        metadata: dict,
        idempotency_key: str,
        customer: str = "",
    ) -> IntentResult:
        """Create and confirm a payment (PaymentIntent); `customer` is the one the payment
        method is attached to, if any."""
        raise NotImplementedError

    def capture_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        raise NotImplementedError

    def cancel_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        raise NotImplementedError

    def retrieve_payment(self, *, payment_id: str) -> IntentResult:
        raise NotImplementedError

    def refund(
        self, *, payment_id: str, amount: int, metadata: dict, idempotency_key: str
    ) -> RefundResult:
        raise NotImplementedError

    def retrieve_refund(self, *, refund_id: str) -> RefundResult:
        raise NotImplementedError

    def transfer(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str,
        transfer_group: str,
        metadata: dict,
        idempotency_key: str,
    ) -> TransferResult:
        raise NotImplementedError

    def list_payments(self, *, created_since: int, limit: int = 100) -> list[IntentResult]:
        """The gateway's payments created at or after `created_since` (unix seconds)."""
        raise NotImplementedError

    def list_refunds(self, *, created_since: int, limit: int = 100) -> list[RefundResult]:
        raise NotImplementedError

    def list_transfers(self, *, created_since: int, limit: int = 100) -> list[TransferResult]:
        raise NotImplementedError

    def payout_destination_for(self, *, user) -> str:
        """The connected account for a user, or "" when there is none."""
        from payments.models import PayoutAccount

        account = PayoutAccount.objects.filter(user=user, provider=self.name).first()
        return account.account_id if account else ""
