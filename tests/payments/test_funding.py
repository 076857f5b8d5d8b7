"""Funding a milestone through the API on the sandbox gateway: the contract's fields, the
state machine, escrow and ledger effects, events, and what failures leave behind."""

import pytest

from escrow.models import JournalEntry, Milestone
from payments.gateways import sandbox
from payments.models import GatewayAttempt, Payment, SandboxObject
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def add_method(party, token="pm_card_visa"):
    response = party.post("/api/v1/payment-methods", {"token": token}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def fund(party, milestone, token="pm_card_visa"):
    method = add_method(party, token)
    return party.post(
        f"/api/v1/milestones/{milestone.pk}/fund", {"payment_method": method["id"]}, format="json"
    )


def test_payment_method_create_returns_display_data_only(homeowner):
    body = add_method(homeowner, "pm_card_mastercard")

    assert body["brand"] == "mastercard"
    assert body["last4"] == "4444"
    assert body["status"] == "verified"
    assert set(body) >= {"id", "brand", "last4", "status"}


def test_unknown_token_is_refused_and_nothing_is_stored(homeowner):
    response = homeowner.post("/api/v1/payment-methods", {"token": "pm_nope"}, format="json")

    assert response.status_code == 422
    assert not homeowner.user.payment_methods.exists()


def test_fund_with_visa_completes_and_funds_the_milestone(homeowner, milestone):
    response = fund(homeowner, milestone)

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "status", "amount", "currency", "milestone"}
    assert body["amount"] == milestone.amount and body["currency"] == "usd"
    assert body["milestone"] == milestone.pk
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "completed"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    entry = JournalEntry.objects.get(reference=f"fund:{payment.pk}")
    assert entry.amount == milestone.amount


def test_payment_detail_has_the_contract_fields(homeowner, contractor, milestone):
    payment_id = fund(homeowner, milestone).json()["id"]

    for party in (homeowner, contractor):
        body = party.get(f"/api/v1/payments/{payment_id}").json()
        assert body["status"] == "completed"
        assert body["amount_refunded"] == 0
        assert body["payer"] == homeowner.user.pk
        assert body["payee"] == contractor.user.pk
        assert body["failure_code"] is None


def test_a_stranger_gets_404_for_someone_elses_payment(homeowner, stranger, milestone):
    payment_id = fund(homeowner, milestone).json()["id"]

    assert stranger.get(f"/api/v1/payments/{payment_id}").status_code == 404
    assert stranger.get(f"/api/v1/payments/{payment_id}/timeline").status_code == 404


def test_operator_sees_any_payment(homeowner, operator, milestone):
    payment_id = fund(homeowner, milestone).json()["id"]

    assert operator.get(f"/api/v1/payments/{payment_id}").status_code == 200


def test_events_walk_the_state_machine_in_order(homeowner, contractor, milestone):
    payment_id = fund(homeowner, milestone).json()["id"]

    timeline = homeowner.get(f"/api/v1/payments/{payment_id}/timeline").json()
    types = [event["type"] for event in timeline]
    assert types[0] == "payment.started"
    assert types[-1] == "payment.completed"
    moves = [
        (event["data"]["previous_status"], event["data"]["new_status"])
        for event in timeline
        if event["type"] == "payment.status_updated"
    ]
    assert moves == [
        ("initiated", "processing"),
        ("processing", "authorized"),
        ("authorized", "completed"),
    ]
    completed = timeline[-1]
    assert {"payment_id", "amount", "currency", "status"} <= set(completed["data"])
    assert set(completed["channels"]) >= {
        f"user.{homeowner.user.pk}.payments",
        f"user.{contractor.user.pk}.payments",
        f"payment.{payment_id}",
        f"project.{milestone.project_id}",
        f"milestone.{milestone.pk}",
    }


def test_each_gateway_call_is_recorded_with_a_key_from_our_row(homeowner, milestone):
    payment_id = fund(homeowner, milestone).json()["id"]

    attempts = list(
        GatewayAttempt.objects.filter(payment_id=payment_id)
        .order_by("id")
        .values_list("operation", "idempotency_key", "outcome")
    )
    assert attempts == [
        ("authorize", f"payment:{payment_id}:authorize", "succeeded"),
        ("capture", f"payment:{payment_id}:capture", "succeeded"),
    ]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_a_decline_fails_the_payment_once_and_frees_the_milestone(
    homeowner, milestone, token, code
):
    payment_id = fund(homeowner, milestone, token).json()["id"]

    payment = Payment.objects.get(pk=payment_id)
    assert payment.status == "failed"
    assert payment.failure_code == code
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    assert not JournalEntry.objects.filter(reference=f"fund:{payment_id}").exists()
    # Declines are never retried: one call, no next attempt.
    assert payment.attempts.filter(operation="authorize").count() == 1
    assert payment.next_attempt_at is None
    assert Event.objects.filter(type="payment.failed", aggregate_id=str(payment_id)).count() == 1
    body = homeowner.get(f"/api/v1/payments/{payment_id}").json()
    assert body["failure_code"] == code


def test_after_a_decline_the_homeowner_can_fund_again(homeowner, milestone):
    fund(homeowner, milestone, "pm_card_chargeDeclined")

    response = fund(homeowner, milestone, "pm_card_visa")

    assert response.status_code == 201
    assert Payment.objects.get(pk=response.json()["id"]).status == "completed"


def test_authentication_required_verifies_then_completes(homeowner, milestone):
    payment_id = fund(homeowner, milestone, "pm_card_authenticationRequired").json()["id"]
    assert Payment.objects.get(pk=payment_id).status == "verifying"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDING

    sandbox.flush()  # the customer completes 3-D Secure; the sandbox's webhooks arrive

    assert Payment.objects.get(pk=payment_id).status == "completed"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    statuses = [
        event.data["new_status"]
        for event in Event.objects.filter(
            type="payment.status_updated", aggregate_id=str(payment_id)
        ).order_by("id")
    ]
    assert statuses == ["processing", "verifying", "authorized", "completed"]


def test_funding_twice_is_a_conflict_and_changes_nothing(homeowner, milestone):
    fund(homeowner, milestone)
    before = Payment.objects.count()

    response = fund(homeowner, milestone)

    assert response.status_code == 409
    assert Payment.objects.count() == before


def test_only_the_homeowner_may_fund(contractor, milestone):
    response = fund(contractor, milestone)

    assert response.status_code in (403, 404)
    assert not Payment.objects.exists()


def test_someone_elses_payment_method_is_refused(homeowner, stranger, milestone):
    method = add_method(stranger)

    response = homeowner.post(
        f"/api/v1/milestones/{milestone.pk}/fund", {"payment_method": method["id"]}, format="json"
    )

    assert response.status_code == 400
    assert not Payment.objects.exists()
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING


def test_a_timeout_is_resolved_with_the_same_key_and_charges_once(homeowner, milestone):
    response = fund(homeowner, milestone, "pm_card_timeout")
    payment = Payment.objects.get(pk=response.json()["id"])
    assert payment.status == "processing"
    assert payment.next_attempt_at is not None
    assert payment.attempts.get(operation="authorize").outcome == "unknown"

    from payments.services import payment_process

    payment_process(payment_id=payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1
    outcomes = list(payment.attempts.order_by("id").values_list("operation", "outcome"))
    assert outcomes == [
        ("authorize", "unknown"),
        ("retrieve", "succeeded"),
        ("capture", "succeeded"),
    ]
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_a_server_error_is_retried_with_backoff_and_then_succeeds(homeowner, milestone):
    response = fund(homeowner, milestone, "pm_card_serverError")
    payment = Payment.objects.get(pk=response.json()["id"])
    assert payment.status == "processing"
    assert payment.attempt_count == 1
    assert payment.next_attempt_at > payment.updated_at.replace(microsecond=0)

    from payments.services import payment_process

    payment_process(payment_id=payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1


def test_large_payments_go_to_the_high_priority_queue(homeowner, milestone, settings, mocker=None):
    from unittest import mock

    from payments import tasks

    settings.PAYMENTS_HIGH_PRIORITY_AMOUNT = milestone.amount - 1
    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        response = fund(homeowner, milestone)

    assert response.status_code == 201
    assert apply_async.call_args.kwargs["queue"] == "high"
    assert Payment.objects.get(pk=response.json()["id"]).is_high_priority


def test_small_payments_go_to_the_default_queue(homeowner, milestone, settings):
    from unittest import mock

    from payments import tasks

    settings.PAYMENTS_HIGH_PRIORITY_AMOUNT = milestone.amount
    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        fund(homeowner, milestone)

    assert apply_async.call_args.kwargs["queue"] == "default"


def test_the_priority_threshold_is_scaled_by_each_currencys_exponent(settings):
    """The threshold means the same number of major units in every currency: 10,000.00 USD is
    1,000,000 cents, 10,000 JPY is 10,000 yen and 10,000.000 KWD is 10,000,000 fils, instead
    of 1,000,000 minor units of each (a million yen would not have been high priority)."""
    from payments.services.funding import high_priority_threshold, is_high_priority

    settings.PAYMENTS_HIGH_PRIORITY_AMOUNT = 1_000_000
    settings.PAYMENTS_HIGH_PRIORITY_AMOUNTS = {}

    assert high_priority_threshold("usd") == 1_000_000
    assert high_priority_threshold("jpy") == 10_000
    assert high_priority_threshold("kwd") == 10_000_000
    assert is_high_priority(1_000_000, "jpy")
    assert not is_high_priority(1_000_000, "kwd")
    assert not is_high_priority(1_000_000, "usd")


def test_a_per_currency_priority_threshold_overrides_the_scaled_one(settings):
    """An operator who wants a threshold at today's exchange rate sets it per currency, in
    that currency's minor units; the others keep the scaled default."""
    from payments.services.funding import high_priority_threshold, is_high_priority

    settings.PAYMENTS_HIGH_PRIORITY_AMOUNT = 1_000_000
    settings.PAYMENTS_HIGH_PRIORITY_AMOUNTS = {"jpy": 1_500_000}

    assert high_priority_threshold("jpy") == 1_500_000
    assert not is_high_priority(1_000_000, "jpy")
    assert is_high_priority(1_500_001, "jpy")
    assert high_priority_threshold("eur") == 1_000_000


def test_a_zero_decimal_payment_is_queued_by_its_own_threshold(homeowner, contractor, settings):
    """With a yen threshold of 1,500,000, funding a milestone of 1,200,000 yen stays on the
    default queue (compared as raw minor units with the USD-sized 1,000,000 it went high) and
    one of 2,000,000 yen goes to the high queue."""
    from unittest import mock

    from payments import tasks
    from tests.escrow.factories import MilestoneFactory, ProjectFactory

    settings.PAYMENTS_HIGH_PRIORITY_AMOUNT = 1_000_000
    settings.PAYMENTS_HIGH_PRIORITY_AMOUNTS = {"jpy": 1_500_000}
    project = ProjectFactory(homeowner=homeowner.user, contractor=contractor.user, currency="jpy")
    small = MilestoneFactory(project=project, amount=1_200_000)
    large = MilestoneFactory(project=project, amount=2_000_000)

    with mock.patch.object(tasks.payment_process_task, "apply_async") as apply_async:
        fund(homeowner, small)
        fund(homeowner, large)

    queues = [call.kwargs["queue"] for call in apply_async.call_args_list]
    assert queues == ["default", "high"]
