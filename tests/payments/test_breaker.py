"""The circuit breaker per gateway operation: opens on the error rate over the window,
announces each transition once, queues new funding while open, half-opens after the
cool-down, closes on a good probe and reopens on a bad one. Runs against the database store
and, where Redis is configured, the Redis store."""

import time

import pytest
from django.conf import settings as django_settings

from payments import breaker
from payments.calls import BreakerOpen
from payments.gateways import sandbox
from payments.models import CircuitBreaker, Payment
from payments.services import payment_process
from realtime.models import Event
from tests.factories import OperatorFactory
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)

BACKENDS = ["database"] + (["redis"] if django_settings.REDIS_URL else [])
NAME = "sandbox:authorize"


@pytest.fixture(params=BACKENDS)
def backend(request, settings):
    settings.PAYMENTS_BREAKER_BACKEND = request.param
    breaker._stores.clear()
    if request.param == "redis":
        breaker.store().clear_window(NAME)
        breaker.store().redis.delete(breaker._RedisStore._key(NAME))
        breaker.store().redis.delete(breaker._RedisStore._key(NAME) + ":probe")
    yield request.param
    if request.param == "redis":
        breaker.store().clear_window(NAME)
        breaker.store().redis.delete(breaker._RedisStore._key(NAME))
        breaker.store().redis.delete(breaker._RedisStore._key(NAME) + ":probe")


def fail(times):
    for _ in range(times):
        breaker.record(NAME, success=False)


def transitions():
    return list(
        Event.objects.filter(type__startswith="circuit_breaker.")
        .order_by("id")
        .values_list("type", flat=True)
    )


def cool_down():
    """Pretend the cool-down passed: move retry_at into the past in the shared store."""
    store = breaker.store()
    if isinstance(store, breaker._RedisStore):
        store.redis.hset(breaker._RedisStore._key(NAME), "retry_at", time.time() - 1)
    else:
        from datetime import timedelta

        from django.utils import timezone

        CircuitBreaker.objects.filter(name=NAME).update(
            retry_at=timezone.now() - timedelta(seconds=1)
        )


def test_opens_when_the_error_rate_reaches_the_threshold(backend, operator):
    breaker.record(NAME, success=True)
    breaker.record(NAME, success=True)
    fail(1)
    assert breaker.allow(NAME).allowed  # 1 of 3 failed, under the minimum calls

    fail(1)  # 2 of 4: 50 %

    decision = breaker.allow(NAME)
    assert not decision.allowed
    assert decision.state == "open"
    assert transitions() == ["circuit_breaker.opened"]
    opened = Event.objects.get(type="circuit_breaker.opened")
    assert opened.data["name"] == NAME
    assert operator.user.pk in opened.audience
    assert CircuitBreaker.objects.get(name=NAME).state == "open"


def test_stays_closed_under_the_threshold(backend):
    for _ in range(7):
        breaker.record(NAME, success=True)
    fail(3)

    assert breaker.allow(NAME).allowed
    assert transitions() == []


def test_more_failures_while_open_announce_nothing_more(backend):
    fail(4)
    fail(10)

    assert transitions() == ["circuit_breaker.opened"]


def test_half_opens_after_the_cool_down_and_a_good_probe_closes_it(backend):
    fail(4)
    cool_down()

    first = breaker.allow(NAME)
    second = breaker.allow(NAME)

    assert first.allowed and first.state == "half_open"
    assert not second.allowed  # one probe at a time
    breaker.record(NAME, success=True)
    assert breaker.allow(NAME).allowed
    assert breaker.status(NAME)["state"] == "closed"
    assert transitions() == [
        "circuit_breaker.opened",
        "circuit_breaker.half_open",
        "circuit_breaker.closed",
    ]


def test_a_bad_probe_opens_it_again(backend):
    fail(4)
    cool_down()
    assert breaker.allow(NAME).allowed

    breaker.record(NAME, success=False)

    assert not breaker.allow(NAME).allowed
    assert transitions() == [
        "circuit_breaker.opened",
        "circuit_breaker.half_open",
        "circuit_breaker.opened",
    ]


def test_an_operator_can_close_it(backend):
    fail(4)

    breaker.reset(NAME)

    assert breaker.allow(NAME).allowed
    assert transitions()[-1] == "circuit_breaker.closed"


def test_while_open_new_funding_is_accepted_and_queued_not_failed(backend, homeowner, milestone):
    fail(4)

    response = homeowner.post(
        f"/api/v1/milestones/{milestone.pk}/fund",
        {"payment_method": _method(homeowner)},
        format="json",
    )

    assert response.status_code == 201
    payment = Payment.objects.get(pk=response.json()["id"])
    assert payment.status == "initiated"
    assert payment.next_attempt_at is not None
    assert not payment.attempts.filter(operation="authorize").exists()

    cool_down()
    payment_process(payment_id=payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert breaker.status(NAME)["state"] == "closed"


def _method(party):
    return party.post("/api/v1/payment-methods", {"token": "pm_card_visa"}, format="json").json()[
        "id"
    ]


def test_gateway_5xx_opens_it_through_real_calls(backend, milestone, project):
    from tests.escrow.factories import MilestoneFactory

    payments = []
    for _ in range(4):
        other = MilestoneFactory(project=project, amount=10_000)
        payments.append(fund(other, "pm_card_serverErrorAlways"))

    assert breaker.status(NAME)["state"] == "open"
    assert all(p.status == "processing" for p in payments)  # deferred, not failed
    assert transitions() == ["circuit_breaker.opened"]


def test_declines_do_not_count_as_failures(backend, project):
    from tests.escrow.factories import MilestoneFactory

    for _ in range(6):
        fund(MilestoneFactory(project=project, amount=10_000), "pm_card_chargeDeclined")

    assert breaker.status(NAME)["state"] == "closed"


def test_a_call_while_open_raises_without_sending(backend, milestone):
    from payments.calls import call_gateway

    fail(4)
    sent = []

    with pytest.raises(BreakerOpen):
        call_gateway(
            provider="sandbox",
            operation="authorize",
            idempotency_key="k",
            fn=lambda: sent.append(1),
        )
    assert sent == []
    sandbox.take_outbox()


def test_admin_shows_the_breakers(client, operator, backend):
    fail(4)
    client.force_login(operator.user)

    response = client.get("/admin/payments/circuitbreaker/")

    assert response.status_code == 200
    assert NAME.encode() in response.content


def test_opening_and_closing_notify_every_operator_in_app_and_half_opening_does_not(
    backend, operator, homeowner
):
    """Breaker events reached no one: no notification rule, and a channel nobody could
    subscribe to. Now opening and closing each give every operator an in-app notification
    that says which operation and why, linking to the breakers' admin page; the half-open
    probe notifies no one, and nobody but operators is notified."""
    from realtime.models import Notification

    second_operator = OperatorFactory()
    fail(4)
    cool_down()
    assert breaker.allow(NAME).allowed  # half open: the probe goes through
    breaker.record(NAME, success=True)

    assert transitions()[-3:] == [
        "circuit_breaker.opened",
        "circuit_breaker.half_open",
        "circuit_breaker.closed",
    ]
    notifications = Notification.objects.order_by("id")
    assert {n.user_id for n in notifications} == {operator.user.pk, second_operator.pk}
    assert [n.event.type for n in notifications if n.user_id == operator.user.pk] == [
        "circuit_breaker.opened",
        "circuit_breaker.closed",
    ]
    opened, closed = (n for n in notifications if n.user_id == operator.user.pk)
    assert opened.kind == closed.kind == "circuit_breaker"
    assert "paused" in opened.title and NAME in opened.body and "100% of recent" in opened.body
    assert "go through again" in closed.title and NAME in closed.body
    assert opened.url == "/admin/payments/circuitbreaker/"
    assert not Notification.objects.filter(user=homeowner.user).exists()


def test_breaker_events_travel_on_the_operators_channel(backend, operator):
    """They are carried on ops.circuit_breakers, the channel operators may subscribe to."""
    fail(4)

    assert Event.objects.get(type="circuit_breaker.opened").channels == ["ops.circuit_breakers"]
