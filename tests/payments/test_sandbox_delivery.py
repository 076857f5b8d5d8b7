"""The sandbox gateway in the embedded default: with Celery eager it delivers its signed
webhooks from a timer thread, a short delay after each change, through the same ingest
function as POST /webhooks/sandbox/ (signature check included)."""

import time

import pytest

from payments.models import Payment, WebhookEvent
from tests.conftest import requires_postgres
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@requires_postgres
@pytest.mark.postgres
def test_timer_delivery_completes_a_3ds_payment_by_itself(milestone, settings):
    """PostgreSQL: the test database of SQLite runs are in memory, shared between threads
    with table locks; the embedded default's file database (WAL, busy timeout) has none."""
    settings.SANDBOX_WEBHOOK_DELIVERY = "auto"
    settings.SANDBOX_WEBHOOK_DELAY = 0.05

    payment = fund(milestone, "pm_card_authenticationRequired")

    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == "completed")
    assert wait_for(
        lambda: WebhookEvent.objects.filter(
            provider="sandbox", type="payment_intent.succeeded", status__in=["processed", "ignored"]
        ).exists()
    )
    settings.SANDBOX_WEBHOOK_DELIVERY = "outbox"
    time.sleep(0.3)  # let the last timers finish before the database is flushed


def test_deliveries_with_a_wrong_secret_are_refused_and_stored_nowhere(milestone, settings):
    from payments.gateways import sandbox

    fund(milestone)
    deliveries = sandbox.take_outbox()
    settings.SANDBOX_WEBHOOK_SECRET = "whsec_rotated_without_the_old_one"

    from payments.exceptions import WebhookRejected

    with pytest.raises(WebhookRejected):
        sandbox.deliver(deliveries[0])
    assert WebhookEvent.objects.count() == 0
