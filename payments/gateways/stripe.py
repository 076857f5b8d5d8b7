"""The Stripe adapter: the official SDK through `StripeClient`, API version pinned.

- Idempotency keys come from our rows ("payment:<id>:authorize"), so repeating a call after a
  lost answer makes Stripe return the first result rather than charge again; the SDK's own
  retries are off (max_network_retries=0) because ours decide when, with the same key.
- `STRIPE_API_BASE` is honoured, so the tests run against localstripe on 127.0.0.1.
- Our ids travel in `metadata`. PaymentIntents carry no `transfer_group`, `description` or
  `automatic_payment_methods` (localstripe refuses them; `payment_method_types=["card"]`
  keeps confirmation free of redirects); the transfer group is set on the transfer.
- Payouts are Connect transfers with `source_transaction` = the funding charge.
- Payment methods are attached to one Customer per user (created with the key
  "customer:user:<id>"), and PaymentIntents name that Customer.
"""

from __future__ import annotations

import stripe
from django.conf import settings

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

API_VERSION = "2026-10-28.endive"


def _http_client() -> stripe.HTTPClient:
    # Every outbound call has a timeout; a timeout is an unknown outcome (see _translate).
    return stripe.RequestsClient(timeout=settings.PAYMENTS_GATEWAY_TIMEOUT_SECONDS)


def _client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY or "sk_test_missing",
        stripe_version=API_VERSION,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=_http_client(),
        max_network_retries=0,
    )


def _translate(exc: stripe.StripeError) -> Exception:
    status = getattr(exc, "http_status", None)
    code = getattr(exc, "code", None) or ""
    message = getattr(exc, "user_message", None) or str(exc)[:250]
    if isinstance(exc, stripe.CardError):
        decline = (getattr(exc, "error", None) and exc.error.decline_code) or ""
        return CardDeclined(message, code=decline or code or "card_declined", http_status=status)
    if isinstance(exc, stripe.APIConnectionError):
        # The request may have reached Stripe: the outcome is unknown until the same
        # idempotency key is asked again.
        return GatewayTimeout(message, code="network_error")
    if isinstance(exc, stripe.IdempotencyError) and status == 409:
        # The same key is still being processed by another of our workers: try again later.
        return GatewayUnavailable(message, code="idempotency_key_in_use", http_status=409)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return GatewayUnavailable(message, code="rate_limit", http_status=429)
    if (status is not None and status >= 500) or isinstance(exc, stripe.APIError):
        return GatewayUnavailable(message, code=code or "api_error", http_status=status)
    return InvalidRequest(message, code=code or "invalid_request", http_status=status)


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except stripe.StripeError as exc:
        raise _translate(exc) from exc


def _get(obj, name, default=None):
    try:
        value = obj[name]
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def _id_of(value) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else _get(value, "id", "")


def _plain(obj) -> dict:
    """SDK objects as plain dicts (StripeObject is no longer a mapping)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _intent(pi) -> IntentResult:
    pi = _plain(pi)
    error = _get(pi, "last_payment_error", {}) or {}
    return IntentResult(
        id=pi["id"],
        status=pi["status"],
        amount=int(pi["amount"]),
        currency=pi["currency"],
        charge_id=_id_of(_get(pi, "latest_charge")),
        amount_received=int(_get(pi, "amount_received", 0) or 0),
        failure_code=_get(error, "decline_code", "") or _get(error, "code", "") or "",
        failure_message=_get(error, "message", "") or "",
        metadata=dict(_get(pi, "metadata", {}) or {}),
        next_action=next_action_from(pi),
        client_secret=_get(pi, "client_secret", "") or "",
    )


def _refund(refund) -> RefundResult:
    refund = _plain(refund)
    return RefundResult(
        id=refund["id"],
        status=refund["status"],
        amount=int(refund["amount"]),
        currency=refund["currency"],
        payment_id=_id_of(_get(refund, "payment_intent")),
        charge_id=_id_of(_get(refund, "charge")),
        metadata=dict(_get(refund, "metadata", {}) or {}),
    )


def _transfer(transfer) -> TransferResult:
    transfer = _plain(transfer)
    return TransferResult(
        id=transfer["id"],
        amount=int(transfer["amount"]),
        currency=transfer["currency"],
        destination=_id_of(_get(transfer, "destination")),
        transfer_group=_get(transfer, "transfer_group", "") or "",
        source_transaction=_id_of(_get(transfer, "source_transaction")),
        reversed=bool(_get(transfer, "reversed", False)),
        amount_reversed=int(_get(transfer, "amount_reversed", 0) or 0),
        metadata=dict(_get(transfer, "metadata", {}) or {}),
    )


def _method_info(method) -> MethodInfo:
    method = _plain(method)
    card = _get(method, "card", {}) or {}
    return MethodInfo(
        token=method["id"],
        brand=_get(card, "brand", "") or "",
        last4=_get(card, "last4", "") or "",
        exp_month=_get(card, "exp_month"),
        exp_year=_get(card, "exp_year"),
    )


class StripeGateway(Gateway):
    name = "stripe"

    def __init__(self, client: stripe.StripeClient | None = None):
        self.client = client or _client()

    uses_customers = True
    parse_webhook = staticmethod(events.parse_stripe_shaped)

    def describe_method(self, *, token: str) -> MethodInfo:
        return _method_info(_call(self.client.v1.payment_methods.retrieve, token))

    def create_customer(self, *, email: str, metadata: dict, idempotency_key: str) -> str:
        params = {"metadata": {key: str(value) for key, value in metadata.items()}}
        if email:
            params["email"] = email
        customer = _call(
            self.client.v1.customers.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return _plain(customer)["id"]

    def attach_method(self, *, token: str, customer_id: str, idempotency_key: str) -> MethodInfo:
        method = _call(
            self.client.v1.payment_methods.attach,
            token,
            params={"customer": customer_id},
            options={"idempotency_key": idempotency_key},
        )
        return _method_info(method)

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
        params = {
            "amount": amount,
            "currency": currency,
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "capture_method": capture_method,
            "confirm": True,
            "metadata": {key: str(value) for key, value in metadata.items()},
        }
        if customer:
            # Stripe refuses a PaymentMethod attached to a Customer without that Customer.
            params["customer"] = customer
        try:
            pi = self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.CardError as exc:
            # A decline still created the PaymentIntent; keep its id for the attempt row.
            declined = _translate(exc)
            intent = getattr(getattr(exc, "error", None), "payment_intent", None)
            declined.payment_id = _id_of(intent)
            raise declined from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _intent(pi)

    def capture_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        pi = _call(
            self.client.v1.payment_intents.capture,
            payment_id,
            options={"idempotency_key": idempotency_key},
        )
        return _intent(pi)

    def cancel_payment(self, *, payment_id: str, idempotency_key: str) -> IntentResult:
        pi = _call(
            self.client.v1.payment_intents.cancel,
            payment_id,
            options={"idempotency_key": idempotency_key},
        )
        return _intent(pi)

    def retrieve_payment(self, *, payment_id: str) -> IntentResult:
        return _intent(_call(self.client.v1.payment_intents.retrieve, payment_id))

    def refund(self, *, payment_id, amount, metadata, idempotency_key) -> RefundResult:
        refund = _call(
            self.client.v1.refunds.create,
            params={
                "payment_intent": payment_id,
                "amount": amount,
                "metadata": {key: str(value) for key, value in metadata.items()},
            },
            options={"idempotency_key": idempotency_key},
        )
        return _refund(refund)

    def retrieve_refund(self, *, refund_id: str) -> RefundResult:
        return _refund(_call(self.client.v1.refunds.retrieve, refund_id))

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
        params = {
            "amount": amount,
            "currency": currency,
            "destination": destination,
            "transfer_group": transfer_group,
            "metadata": {key: str(value) for key, value in metadata.items()},
        }
        if source_transaction:
            params["source_transaction"] = source_transaction
        transfer = _call(
            self.client.v1.transfers.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return _transfer(transfer)

    def _list(self, service, created_since: int, limit: int):
        try:
            page = service.list(params={"created": {"gte": created_since}, "limit": limit})
        except stripe.InvalidRequestError:
            # localstripe's lists take no `created` filter; filter here instead.
            page = _call(service.list, params={"limit": limit})
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        items = [_plain(item) for item in _plain(page).get("data") or []]
        return [item for item in items if int(_get(item, "created", 0) or 0) >= created_since]

    def list_payments(self, *, created_since: int, limit: int = 100) -> list[IntentResult]:
        return [
            _intent(pi) for pi in self._list(self.client.v1.payment_intents, created_since, limit)
        ]

    def list_refunds(self, *, created_since: int, limit: int = 100) -> list[RefundResult]:
        return [_refund(r) for r in self._list(self.client.v1.refunds, created_since, limit)]

    def list_transfers(self, *, created_since: int, limit: int = 100) -> list[TransferResult]:
        return [_transfer(t) for t in self._list(self.client.v1.transfers, created_since, limit)]
