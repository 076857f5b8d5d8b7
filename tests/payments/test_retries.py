"""Retries: backoff with jitter for transient errors only; an unknown outcome is resolved
before anything is re-sent; long delays wait in the database for beat."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from payments import services, tasks
from payments.calls import retry_delay
from payments.gateways import sandbox
from payments.models import Payment, SandboxObject
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_backoff_doubles_with_jitter_and_is_capped(settings):
    settings.PAYMENTS_RETRY_BASE_SECONDS = 2
    settings.PAYMENTS_RETRY_MAX_DELAY_SECONDS = 60
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (12, 60)]:
        delays = [retry_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len({round(d, 6) for d in delays}) > 1  # jittered


def test_repeated_5xx_backs_off_and_gives_up_after_the_maximum(milestone, settings):
    settings.PAYMENTS_RETRY_MAX_ATTEMPTS = 3
    settings.PAYMENTS_BREAKER_MIN_CALLS = 100
    payment = fund(milestone, "pm_card_serverErrorAlways")
    assert payment.status == "processing" and payment.attempt_count == 1

    services.payment_process(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.attempt_count == 2 and payment.status == "processing"

    services.payment_process(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert payment.failure_code == "gateway_unavailable"
    assert payment.attempts.filter(outcome="transient_error").count() == 3
    assert payment.milestone.status == "pending"


def test_rate_limits_are_transient(milestone):
    sandbox.inject_fault("authorize", "rate_limited")

    payment = fund(milestone)

    assert payment.status == "processing"
    assert payment.attempts.get().http_status == 429
    services.payment_process(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == "completed"


def test_a_capture_timeout_is_resolved_without_capturing_twice(milestone):
    sandbox.inject_fault("capture", "timeout")

    payment = fund(milestone)

    assert payment.status == "authorized"
    services.payment_process(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == "completed"
    intent = SandboxObject.objects.get(kind="payment_intent").data
    assert intent["amount_received"] == payment.amount
    assert payment.attempts.filter(operation="capture").count() == 2
    assert len({a.idempotency_key for a in payment.attempts.filter(operation="capture")}) == 1


def test_short_delays_ride_a_countdown_long_ones_wait_for_beat(milestone, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.PAYMENTS_RETRY_COUNTDOWN_MAX_SECONDS = 30
    payment = fund_without_processing(milestone, "pm_card_serverErrorAlways")

    Payment.objects.filter(pk=payment.pk).update(attempt_count=0)
    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        settings.PAYMENTS_RETRY_BASE_SECONDS = 2
        tasks.payment_process_task.run(payment.pk)
    assert apply_async.call_args.kwargs["countdown"] <= 2

    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        settings.PAYMENTS_RETRY_BASE_SECONDS = 600
        tasks.payment_process_task.run(payment.pk)
    apply_async.assert_not_called()
    payment.refresh_from_db()
    assert payment.next_attempt_at > timezone.now() + timedelta(seconds=200)


def fund_without_processing(milestone, token):
    with mock.patch.object(tasks.payment_process_task, "apply_async"):
        return fund(milestone, token)


def test_beat_picks_up_due_work_and_only_due_work(milestone, settings):
    payment = fund_without_processing(milestone, "pm_card_visa")
    Payment.objects.filter(pk=payment.pk).update(
        next_attempt_at=timezone.now() + timedelta(hours=1)
    )

    assert services.work_due()["payments"] == []

    later = timezone.now() + timedelta(hours=2)
    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        due = services.work_due(now=later)
    assert due["payments"] == [payment.pk]
    assert apply_async.call_args.kwargs["args"] == [payment.pk]


def test_beat_rescues_a_payment_whose_enqueue_was_lost(milestone):
    payment = fund_without_processing(milestone, "pm_card_visa")
    assert payment.status == "initiated"

    services.work_due(now=timezone.now() + timedelta(minutes=5))

    payment.refresh_from_db()
    assert payment.status == "completed"


def test_a_refused_capture_of_a_payment_already_captured_completes_it(milestone):
    from unittest import mock

    from payments.gateways import InvalidRequest

    with mock.patch.object(tasks.payment_process_task, "apply_async"):
        payment = fund(milestone)
    services.payment_process(payment_id=payment.pk)  # authorized, then captured
    Payment.objects.filter(pk=payment.pk).update(status="authorized")  # our answer was lost
    refused = InvalidRequest("already captured", code="payment_intent_unexpected_state")
    with mock.patch.object(sandbox.SandboxGateway, "capture_payment", side_effect=refused):
        services.payment_process(payment_id=payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert payment.attempts.filter(operation="retrieve", outcome="succeeded").exists()


def test_a_refused_capture_of_a_capturable_payment_declines_it(milestone):
    from unittest import mock

    from payments.gateways import InvalidRequest

    refused = InvalidRequest("capture refused", code="charge_expired_for_capture")
    with mock.patch.object(sandbox.SandboxGateway, "capture_payment", side_effect=refused):
        payment = fund(milestone)

    payment.refresh_from_db()
    assert payment.status == "declined"
    assert payment.failure_code == "charge_expired_for_capture"
    assert payment.milestone.status == "pending"
