"""The sandbox's sender: queued, timer-thread or Celery delivery of its signed webhooks and
of the simulated customer's 3-D Secure completion, plus injected faults (see __init__)."""

import logging
import threading
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

# Faults injected per operation ("authorize", "capture", "cancel", "refund", "transfer"):
# each entry is consumed by one call. Kinds: "timeout" (carried out, answer lost),
# "server_error" (500, nothing done), "rate_limited" (429, nothing done).
FAULTS: dict[str, list[str]] = {}
_faults_lock = threading.Lock()


def inject_fault(operation: str, kind: str, times: int = 1) -> None:
    with _faults_lock:
        FAULTS.setdefault(operation, []).extend([kind] * times)


def clear_faults() -> None:
    with _faults_lock:
        FAULTS.clear()


def take_fault(operation: str) -> str | None:
    with _faults_lock:
        queue = FAULTS.get(operation)
        return queue.pop(0) if queue else None


@dataclass
class Delivery:
    kind: str  # "webhook" or "authenticate"
    body: bytes = b""
    header: str = ""
    object_id: str = ""


OUTBOX: list[Delivery] = []
_outbox_lock = threading.Lock()


def flush(*, max_rounds: int = 10) -> int:
    """Deliver everything in the outbox, in order, including what delivering adds (an
    authentication completes and then sends its own webhook). Returns the number done."""
    done = 0
    for _ in range(max_rounds):
        with _outbox_lock:
            items = list(OUTBOX)
            OUTBOX.clear()
        if not items:
            break
        for item in items:
            _perform(item)
            done += 1
    return done


def take_outbox() -> list[Delivery]:
    """Remove and return what is queued (tests deliver it themselves: twice, reversed...)."""
    with _outbox_lock:
        items = list(OUTBOX)
        OUTBOX.clear()
    return items


def deliver(item: Delivery) -> None:
    _perform(item)


def _perform(item: Delivery) -> None:
    if item.kind == "webhook":
        from payments.services.webhooks import webhook_receive

        webhook_receive(provider="sandbox", body=item.body, signature_header=item.header)
    elif item.kind == "authenticate":
        from payments.gateways.sandbox.gateway import SandboxGateway

        SandboxGateway().complete_authentication(payment_id=item.object_id)


def schedule(item: Delivery) -> None:
    mode = getattr(settings, "SANDBOX_WEBHOOK_DELIVERY", "auto")
    if mode == "off":
        return
    if mode == "outbox":
        with _outbox_lock:
            OUTBOX.append(item)
        return
    delay = float(getattr(settings, "SANDBOX_WEBHOOK_DELAY", 1.0))
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # No worker (Celery eager): a timer thread plays the gateway's sender.
        def run():
            try:
                _perform(item)
            except Exception:
                logger.exception("sandbox delivery failed", extra={"kind": item.kind})
            finally:
                close_old_connections()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.start()
        return
    from payments.tasks import sandbox_deliver_task

    sandbox_deliver_task.apply_async(
        args=[item.kind, item.body.decode(), item.header, item.object_id], countdown=delay
    )
