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

__all__ = [
    "CardDeclined",
    "Gateway",
    "GatewayError",
    "GatewayTimeout",
    "GatewayUnavailable",
    "IntentResult",
    "InvalidRequest",
    "MethodInfo",
    "RefundResult",
    "TransferResult",
    "default_provider",
    "get_gateway",
]

PROVIDERS = ("sandbox", "stripe")


def default_provider() -> str:
    return settings.PAYMENT_GATEWAY


def get_gateway(name: str | None = None) -> Gateway:
    name = name or default_provider()
    if name == "sandbox":
        from payments.gateways.sandbox import SandboxGateway

        return SandboxGateway()
    if name == "stripe":
        from payments.gateways.stripe import StripeGateway

        return StripeGateway()
    raise ValueError(f"unknown payment gateway {name!r}")
