"""The sandbox gateway: the embedded default, a deterministic stand-in for Stripe.

It accepts Stripe's test payment-method names and behaves like Stripe does for them:

| token | outcome |
|---|---|
| pm_card_visa, pm_card_mastercard, pm_card_amex | authorized (manual capture) or succeeded |
| pm_card_chargeDeclined | declined, code card_declined |
| pm_card_chargeDeclinedInsufficientFunds | declined, code insufficient_funds |
| pm_card_authenticationRequired | requires_action (our `verifying`) with a redirect_to_url
  next action to the sandbox's challenge page (`views.py`, /sandbox/3ds/<intent>/), where the
  card holder passes it (authorized/succeeded) or fails it (requires_payment_method,
  payment_intent_authentication_failure); SANDBOX_AUTHENTICATION=auto: a simulated card
  holder passes it a short delay later |
| pm_card_timeout | the first call per idempotency key is carried out but times out (unknown
  outcome); the same key then returns the stored result |
| pm_card_serverError | the first call per idempotency key fails with a 500 and does nothing |
| pm_card_serverErrorAlways | every call fails with a 503 |

Operator-side simulations: `open_dispute(payment_id=...)` (charge.dispute.created) and
`reverse_transfer(transfer_id=..., amount=None)` (a full or partial Connect transfer reversal;
transfer.reversed with the cumulative `amount_reversed`).

Its records live in `payments.SandboxObject` so every process (web, worker) sees one gateway;
idempotency keys are unique there, so a repeated call returns the first result.

Webhooks: after each change it signs a Stripe-style event with SANDBOX_WEBHOOK_SECRET and
delivers it, SANDBOX_WEBHOOK_DELAY seconds later, to the same ingest function that
POST /webhooks/sandbox/ calls (signature check included). How it delivers
(SANDBOX_WEBHOOK_DELIVERY):
- "auto" (default): with Celery eager (no worker: a manage.py command on its own, tests) a
  timer thread in this process; with a broker (Redis, or `make run`'s filesystem broker) a
  Celery task with a short countdown (the worker delivers it);
- "outbox": kept in `OUTBOX` until `flush()`; tests use it to deliver deterministically,
  twice, or out of order;
- "off": nothing is delivered.
"""

from payments.gateways.sandbox.delivery import (
    FAULTS,
    OUTBOX,
    Delivery,
    clear_faults,
    deliver,
    flush,
    inject_fault,
    take_outbox,
)
from payments.gateways.sandbox.gateway import CARDS, SandboxGateway

__all__ = [
    "CARDS",
    "FAULTS",
    "OUTBOX",
    "Delivery",
    "SandboxGateway",
    "clear_faults",
    "deliver",
    "flush",
    "inject_fault",
    "take_outbox",
]
