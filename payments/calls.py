"""Every gateway call goes through `call_gateway`: the breaker decides whether it may go out,
a GatewayAttempt row records what was asked (with the idempotency key from our row) and what
came back, and the outcome is counted for the breaker.

Retry policy (`retry_delay`): exponential backoff with jitter, for transient errors only
(network, timeout, 429, 5xx, breaker open); declines and other definitive answers are never
retried. The caller stores the next attempt time in its row (`next_attempt_at`); short delays
also ride a Celery countdown, long ones are picked up by beat (payments.work_due), because the
Redis broker would redeliver anything delayed past its visibility timeout."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from payments import breaker
from payments.gateways import CardDeclined, GatewayError
from payments.models import GatewayAttempt

Outcome = GatewayAttempt.Outcome


class BreakerOpen(GatewayError):
    """The breaker for this operation is open: nothing was sent."""

    transient = True

    def __init__(self, name: str, retry_at: float | None):
        super().__init__(f"circuit breaker {name} is open", code="circuit_open")
        self.retry_at = retry_at


def retry_delay(attempt: int) -> float:
    """Seconds before attempt number `attempt + 1`: base·2^(n-1), capped, with equal jitter
    (half fixed, half random) so a burst of failures does not retry in lockstep."""
    base = float(settings.PAYMENTS_RETRY_BASE_SECONDS)
    cap = float(settings.PAYMENTS_RETRY_MAX_DELAY_SECONDS)
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def next_attempt_time(attempt: int, error: GatewayError):
    if isinstance(error, BreakerOpen) and error.retry_at:
        return datetime.fromtimestamp(error.retry_at, tz=UTC) + timedelta(
            milliseconds=random.uniform(0, 1000)
        )
    return timezone.now() + timedelta(seconds=retry_delay(attempt))


def last_outcome(idempotency_key: str) -> str | None:
    return (
        GatewayAttempt.objects.filter(idempotency_key=idempotency_key)
        .exclude(outcome=Outcome.SHORT_CIRCUITED)
        .order_by("-id")
        .values_list("outcome", flat=True)
        .first()
    )


def carry_out(call, *, applied, deferred, refused):
    """The life of one gateway call for one of our rows: `call()` (a call_gateway), then
    `applied(result)` when it answered, `deferred(error)` for a transient error (retried
    later, from the row's next_attempt_at) and `refused(error)` for a definitive one. Returns
    what the chosen step returns (a Progress, for payments, refunds and payouts alike)."""
    try:
        result = call()
    except GatewayError as exc:
        return deferred(exc) if exc.transient else refused(exc)
    return applied(result)


def call_gateway(
    *,
    provider: str,
    operation: str,
    idempotency_key: str,
    fn,
    payment=None,
    refund=None,
    payout=None,
):
    """Run `fn()` (one gateway call) under the breaker and record it. Returns its result or
    raises the GatewayError (BreakerOpen when nothing was sent). Never inside a transaction."""
    name = f"{provider}:{operation}"
    links = {"payment": payment, "refund": refund, "payout": payout}
    decision = breaker.allow(name)
    if not decision.allowed:
        GatewayAttempt.objects.create(
            provider=provider,
            operation=operation,
            idempotency_key=idempotency_key,
            outcome=Outcome.SHORT_CIRCUITED,
            error_code="circuit_open",
            finished_at=timezone.now(),
            **links,
        )
        raise BreakerOpen(name, decision.retry_at)
    attempt = GatewayAttempt.objects.create(
        provider=provider, operation=operation, idempotency_key=idempotency_key, **links
    )
    started = time.perf_counter()
    try:
        result = fn()
    except GatewayError as exc:
        if isinstance(exc, CardDeclined):
            outcome = Outcome.DECLINED
        elif exc.outcome_unknown:
            outcome = Outcome.UNKNOWN
        elif exc.transient:
            outcome = Outcome.TRANSIENT_ERROR
        else:
            outcome = Outcome.ERROR
        GatewayAttempt.objects.filter(pk=attempt.pk).update(
            outcome=outcome,
            error_code=exc.code[:64],
            error_message=exc.message[:255],
            http_status=exc.http_status,
            gateway_object_id=getattr(exc, "payment_id", "")[:255],
            latency_ms=int((time.perf_counter() - started) * 1000),
            finished_at=timezone.now(),
        )
        breaker.record(name, success=not exc.transient)
        raise
    GatewayAttempt.objects.filter(pk=attempt.pk).update(
        outcome=Outcome.SUCCEEDED,
        gateway_object_id=getattr(result, "id", "")[:255],
        gateway_status=str(getattr(result, "status", ""))[:32],
        latency_ms=int((time.perf_counter() - started) * 1000),
        finished_at=timezone.now(),
    )
    breaker.record(name, success=True)
    return result
