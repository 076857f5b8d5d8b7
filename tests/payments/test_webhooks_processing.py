"""Processing inbox events: idempotent, order-independent, parked when the object is unknown,
replayable, and charge disputes freeze the escrow."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from escrow.models import JournalEntry, Milestone
from payments import services
from payments.gateways import sandbox
from payments.models import Payment, WebhookEvent
from realtime.models import Event
from tests.payments.helpers import event_body, fund, post_webhook, signed

pytestmark = pytest.mark.django_db(transaction=True)


def intent_event(event_id, type, payment, status, **extra):
    obj = {
        "id": payment.gateway_payment_id or f"pi_sbx_{payment.pk}",
        "object": "payment_intent",
        "status": status,
        "amount": payment.amount,
        "currency": payment.currency,
        "latest_charge": payment.gateway_charge_id or None,
        "metadata": {"payment_id": str(payment.pk)},
        **extra,
    }
    return event_body(event_id, type, obj)


def deliver(client, body):
    response = post_webhook(client, body, signed(body))
    assert response.status_code == 200
    return response


def status_events(payment):
    return list(
        Event.objects.filter(type="payment.status_updated", aggregate_id=str(payment.pk))
        .order_by("id")
        .values_list("data__new_status", flat=True)
    )


@pytest.fixture
def waiting_payment(milestone):
    """A payment verifying at the gateway (3-D Secure pending); its webhooks are queued."""
    payment = fund(milestone, "pm_card_authenticationRequired")
    assert payment.status == "verifying"
    sandbox.take_outbox()
    return payment


def test_a_late_processing_after_succeeded_changes_nothing(anonymous, waiting_payment):
    payment = waiting_payment
    deliver(anonymous, intent_event("evt_ok", "payment_intent.succeeded", payment, "succeeded"))
    payment.refresh_from_db()
    assert payment.status == "completed"
    events_before = Event.objects.count()

    deliver(anonymous, intent_event("evt_late", "payment_intent.processing", payment, "processing"))

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert Event.objects.count() == events_before
    assert WebhookEvent.objects.get(event_id="evt_late").status == "ignored"


def test_a_failure_after_success_changes_nothing(anonymous, waiting_payment):
    payment = waiting_payment
    deliver(anonymous, intent_event("evt_ok", "payment_intent.succeeded", payment, "succeeded"))

    failed = intent_event(
        "evt_failed",
        "payment_intent.payment_failed",
        payment,
        "requires_payment_method",
        last_payment_error={"code": "card_declined", "message": "no"},
    )
    deliver(anonymous, failed)

    payment.refresh_from_db()
    assert payment.status == "completed"
    milestone = Milestone.objects.get(pk=payment.milestone_id)
    assert milestone.status == Milestone.Status.FUNDED


def test_reversed_order_reaches_the_same_end_with_each_effect_once(anonymous, waiting_payment):
    payment = waiting_payment
    events = [
        intent_event("evt_1", "payment_intent.requires_action", payment, "requires_action"),
        intent_event(
            "evt_2", "payment_intent.amount_capturable_updated", payment, "requires_capture"
        ),
        intent_event("evt_3", "payment_intent.succeeded", payment, "succeeded"),
    ]

    for body in reversed(events):
        deliver(anonymous, body)
    for body in events:
        deliver(anonymous, body)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1
    assert status_events(payment) == ["processing", "verifying", "completed"]
    assert Event.objects.filter(type="payment.completed", aggregate_id=str(payment.pk)).count() == 1


def test_sandbox_deliveries_twice_and_reversed_change_nothing_more(anonymous, milestone):
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()  # authentication completes and all webhooks arrive
    payment.refresh_from_db()
    assert payment.status == "completed"
    events_before = Event.objects.count()
    rows_before = WebhookEvent.objects.count()

    for row in WebhookEvent.objects.order_by("-id"):
        body = _raw(row)
        deliver(anonymous, body)

    assert Event.objects.count() == events_before
    assert WebhookEvent.objects.count() == rows_before
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def _raw(row):
    import json

    return json.dumps(row.payload).encode()


def test_an_event_for_an_unknown_payment_is_parked_then_applied(anonymous, waiting_payment):
    payment = waiting_payment
    body = intent_event("evt_early", "payment_intent.succeeded", payment, "succeeded")
    # The gateway knows it under an id we have not stored yet, and without our metadata.
    import json

    event = json.loads(body)
    event["data"]["object"]["metadata"] = {}
    event["data"]["object"]["id"] = "pi_not_yet_known"
    body = json.dumps(event).encode()

    deliver(anonymous, body)

    row = WebhookEvent.objects.get(event_id="evt_early")
    assert row.status == "parked"
    assert row.next_attempt_at is not None
    payment.refresh_from_db()
    assert payment.status == "verifying"

    Payment.objects.filter(pk=payment.pk).update(gateway_payment_id="pi_not_yet_known")
    due = services.webhooks_due(now=timezone.now() + timedelta(hours=1))

    assert row.pk in due
    row.refresh_from_db()
    assert row.status == "processed"
    payment.refresh_from_db()
    assert payment.status == "completed"


def test_a_parked_event_gives_up_after_the_maximum_attempts(anonymous, settings):
    settings.PAYMENTS_WEBHOOK_MAX_ATTEMPTS = 2
    body = event_body(
        "evt_orphan",
        "payment_intent.succeeded",
        {"id": "pi_orphan", "object": "payment_intent", "status": "succeeded", "metadata": {}},
    )
    deliver(anonymous, body)
    row = WebhookEvent.objects.get()

    services.webhooks_due(now=timezone.now() + timedelta(days=1))

    row.refresh_from_db()
    assert row.status == "failed"
    assert row.attempts == 2


def test_replay_from_the_admin_changes_nothing_that_happened(anonymous, milestone, operator):
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    row = WebhookEvent.objects.filter(type="payment_intent.succeeded").get()
    events_before = Event.objects.count()

    result = services.webhook_replay(webhook_event_id=row.pk, actor=operator.user)

    # It was ignored the first time (the 3-D Secure answer had completed the payment) and
    # stays so: nothing left to do.
    assert (result.status, result.changed) == ("ignored", False)
    assert Event.objects.count() == events_before
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_replaying_a_processed_event_keeps_it_processed_and_says_it_changed_nothing(
    milestone, operator
):
    """The effects were applied the first time; the replay runs the handler again (it is
    idempotent), and the row does not fall back to ignored."""
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    row = WebhookEvent.objects.get(status="processed")
    events_before = Event.objects.count()
    entries_before = JournalEntry.objects.count()

    result = services.webhook_replay(webhook_event_id=row.pk, actor=operator.user)

    assert (result.status, result.changed, result.error) == ("processed", False, "")
    assert "changed nothing" in str(result)
    row.refresh_from_db()
    assert (row.status, row.last_error) == ("processed", "")
    assert Event.objects.count() == events_before
    assert JournalEntry.objects.count() == entries_before
    payment.refresh_from_db()
    assert payment.status == "completed"


def test_a_replay_that_fails_now_leaves_an_applied_event_processed(milestone, operator):
    """Whatever the handler raises on a replay (here: its object cannot be found any more),
    the effects applied the first time stand: the row is not parked, and the result says
    why the replay changed nothing."""
    from unittest import mock

    from payments.exceptions import UnknownObject
    from payments.gateways import EventKind
    from payments.services import webhooks as webhook_services

    fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    row = WebhookEvent.objects.get(status="processed")
    events_before = Event.objects.count()

    def lost(provider, obj):
        raise UnknownObject("no payment for payment_intent pi_x")

    with mock.patch.dict(webhook_services.HANDLERS, {EventKind.PAYMENT_UPDATED: lost}):
        result = services.webhook_replay(webhook_event_id=row.pk, actor=operator.user)

    assert (result.status, result.changed) == ("processed", False)
    assert "no payment for payment_intent" in result.error
    row.refresh_from_db()
    assert row.status == "processed"
    assert row.next_attempt_at is None
    assert row.last_error.startswith("replay: UnknownObject")
    assert Event.objects.count() == events_before


def test_replaying_a_parked_event_processes_it_as_new(milestone, operator):
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    row = WebhookEvent.objects.get(status="processed")
    WebhookEvent.objects.filter(pk=row.pk).update(status="parked", last_error="earlier")

    result = services.webhook_replay(webhook_event_id=row.pk, actor=operator.user)

    assert result.status == "ignored"  # the payment had moved on: nothing to apply
    row.refresh_from_db()
    assert (row.status, row.last_error) == ("ignored", "")
    payment.refresh_from_db()
    assert payment.status == "completed"


def test_admin_replay_action(client, operator, milestone):
    fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    row = WebhookEvent.objects.filter(type="payment_intent.succeeded").get()
    client.force_login(operator.user)

    response = client.post(
        "/admin/payments/webhookevent/",
        {"action": "replay", "_selected_action": [row.pk]},
    )

    assert response.status_code == 302
    row.refresh_from_db()
    assert row.attempts == 2


def test_a_charge_dispute_freezes_the_milestone_and_tells_operators(anonymous, milestone, operator):
    operator.user.email = "ops@example.com"
    operator.user.save()
    payment = fund(milestone)
    sandbox.take_outbox()
    mail.outbox.clear()  # the contractor's "milestone funded" e-mail: not what this is about

    sandbox.SandboxGateway().open_dispute(payment_id=payment.gateway_payment_id)
    sandbox.flush()

    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.DISPUTED
    disputed = Event.objects.get(type="payment.disputed")
    assert operator.user.pk in disputed.audience
    assert disputed.data["payment_id"] == payment.pk
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]


def test_a_duplicate_dispute_notifies_once(anonymous, milestone, operator):
    payment = fund(milestone)
    sandbox.take_outbox()
    sandbox.SandboxGateway().open_dispute(payment_id=payment.gateway_payment_id)
    (delivery,) = [d for d in sandbox.take_outbox() if b"dispute" in d.body]

    sandbox.deliver(delivery)
    sandbox.deliver(delivery)

    assert Event.objects.filter(type="payment.disputed").count() == 1


def test_an_unexpected_error_rolls_the_effect_back_and_parks_the_event(anonymous, waiting_payment):
    from unittest import mock

    payment = waiting_payment
    body = intent_event("evt_boom", "payment_intent.succeeded", payment, "succeeded")
    with mock.patch(
        "payments.services.funding.escrow_services.milestone_funded",
        side_effect=RuntimeError("escrow is down"),
    ):
        deliver(anonymous, body)

    row = WebhookEvent.objects.get(event_id="evt_boom")
    assert row.status == "parked"
    assert row.attempts == 1
    assert "escrow is down" in row.last_error
    payment.refresh_from_db()
    assert payment.status == "verifying"  # nothing of the effect was kept

    services.webhooks_due(now=timezone.now() + timedelta(hours=1))

    row.refresh_from_db()
    assert row.status == "processed"
    payment.refresh_from_db()
    assert payment.status == "completed"


def dispute_closed(payment, status):
    return event_body(
        f"evt_dispute_closed_{payment.pk}_{status}",
        "charge.dispute.closed",
        {
            "id": f"dp_{payment.pk}",
            "object": "dispute",
            "status": status,
            "amount": payment.amount,
            "currency": payment.currency,
            "charge": "ch_x",
            "payment_intent": payment.gateway_payment_id,
            "metadata": {},
        },
    )


def test_a_chargeback_won_unfreezes_the_milestone_back_to_where_it_was(
    anonymous, contractor, homeowner, milestone
):
    """Regression (issue 14): nothing handled a chargeback that ends in the merchant's
    favour, so a frozen milestone could never be released. Won: back to submitted, and the
    homeowner can approve."""
    payment = fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    sandbox.take_outbox()
    sandbox.SandboxGateway().open_dispute(payment_id=payment.gateway_payment_id)
    sandbox.flush()
    assert Milestone.objects.get(pk=milestone.pk).status == Milestone.Status.DISPUTED

    deliver(anonymous, dispute_closed(payment, "won"))

    assert Milestone.objects.get(pk=milestone.pk).status == Milestone.Status.SUBMITTED
    approved = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    assert approved.json()["status"] == "released"


def test_a_chargeback_lost_leaves_the_milestone_frozen(anonymous, operator, milestone):
    payment = fund(milestone)
    sandbox.take_outbox()
    sandbox.SandboxGateway().open_dispute(payment_id=payment.gateway_payment_id)
    sandbox.flush()

    deliver(anonymous, dispute_closed(payment, "lost"))

    assert Milestone.objects.get(pk=milestone.pk).status == Milestone.Status.DISPUTED
    refund = operator.post(
        f"/api/v1/payments/{payment.pk}/refunds", {"amount": 1_000}, format="json"
    )
    assert refund.status_code == 409
    assert not payment.refunds.exists()
