"""Payments' rows: payment methods (tokens only), payments with their gateway attempts, refunds,
payouts, the incoming-webhook inbox, circuit breakers and reconciliation findings.

Every status field has its transition table next to it and a CHECK constraint on its values;
only payments.services change a status, reading it from the locked row."""

from payments.models.inbox import WebhookEvent
from payments.models.methods import GatewayCustomer, PaymentMethod
from payments.models.operations import (
    CircuitBreaker,
    CircuitBreakerWindow,
    Discrepancy,
    ReconciliationRun,
    SandboxObject,
)
from payments.models.payments import GatewayAttempt, Payment, Refund
from payments.models.payouts import Payout, PayoutAccount

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerWindow",
    "Discrepancy",
    "GatewayAttempt",
    "GatewayCustomer",
    "Payment",
    "PaymentMethod",
    "Payout",
    "PayoutAccount",
    "ReconciliationRun",
    "Refund",
    "SandboxObject",
    "WebhookEvent",
]
