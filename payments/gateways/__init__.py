"""Gateway adapters behind one interface (see base.Gateway). `get_gateway(name)` returns the
adapter for a provider name; new payments use settings.PAYMENT_GATEWAY, existing rows keep the
provider they were made with."""

from django.conf import settings

from payments.gateways.base import (
    CardDeclined,
    Gateway,
    GatewayError,
    GatewayTimeout,
    GatewayUnavailable,
    IntentResult,
    InvalidRequest,
    MethodInfo,
    RefundResult,
    TransferResult,
)
from payments.gateways.events import EventKind, GatewayEvent

__all__ = [
    "PROVIDERS",
    "CardDeclined",
    "EventKind",
    "Gateway",
    "GatewayError",
    "GatewayEvent",
    "GatewayTimeout",
    "GatewayUnavailable",
    "IntentResult",
    "InvalidRequest",
    "MethodInfo",
    "RefundResult",
    "TransferResult",
    "default_provider",
    "gateway_class",
    "get_gateway",
    "parse_webhook",
]

# The providers we take payments and webhooks from: the one list (webhooks in, the batch path
# and get_gateway read it).
PROVIDERS = ("sandbox", "stripe")


def default_provider() -> str:
    return settings.PAYMENT_GATEWAY


def gateway_class(name: str) -> type[Gateway]:
    if name == "sandbox":
        from payments.gateways.sandbox import SandboxGateway

        return SandboxGateway
    if name == "stripe":
        from payments.gateways.stripe import StripeGateway

        return StripeGateway
    raise ValueError(f"unknown payment gateway {name!r}")


def get_gateway(name: str | None = None) -> Gateway:
    return gateway_class(name or default_provider())()


def parse_webhook(provider: str, body, *, type: str | None = None) -> GatewayEvent:
    """`provider`'s webhook body (or the stored JSON object) in our own event kinds; `type`
    overrides the body's (an inbox row's stored type)."""
    return gateway_class(provider).parse_webhook(body, type=type)
