"""Notifications: derived after commit from the events a person must act on, in-app (list,
unread count, mark read) and by e-mail per the user's preference."""

import pytest
from django.core import mail
from django.db import transaction
from django.test import TestCase

from realtime.events import emit
from realtime.models import Notification
from realtime.services.notifications import notification_preference_update
from tests.escrow.factories import MilestoneFactory

pytestmark = pytest.mark.django_db


def committed(type, data, *, audience, aggregate=("milestone", 1)):
    with TestCase.captureOnCommitCallbacks(execute=True), transaction.atomic():
        return emit(type, data, aggregate=aggregate, audience=audience, channels=[])


def milestone_event(milestone, type="milestone.status_updated", **data):
    project = milestone.project
    return committed(
        type,
        {
            "milestone_id": milestone.pk,
            "project_id": project.pk,
            "title": milestone.title,
            "amount": milestone.amount,
            "currency": "usd",
            **data,
        },
        audience=[project.homeowner, project.contractor],
        aggregate=("milestone", milestone.pk),
    )


def test_a_submitted_milestone_notifies_the_homeowner_in_app_and_by_email():
    milestone = MilestoneFactory()
    homeowner = milestone.project.homeowner

    event = milestone_event(milestone, new_status="submitted", previous_status="funded")

    notification = Notification.objects.get()
    assert (notification.user, notification.kind, notification.event) == (
        homeowner,
        "milestone_submitted",
        event,
    )
    assert notification.url == f"/projects/{milestone.project_id}/"
    assert notification.email_status == "sent"
    assert [message.to for message in mail.outbox] == [[homeowner.email]]
    assert milestone.title in mail.outbox[0].body


def test_without_an_email_backend_the_email_is_marked_failed_with_a_reason_not_sent(settings):
    """Production mode with no EMAIL_URL (local-memory backend): nothing is delivered, so the
    notification must not claim it was; it is failed, says why, and the in-app one stays."""
    settings.EMAIL_DELIVERY_CONFIGURED = False
    milestone = MilestoneFactory()

    milestone_event(milestone, new_status="submitted", previous_status="funded")

    notification = Notification.objects.get()
    assert notification.email_status == "failed"
    assert notification.email_error == (
        "Not sent: no e-mail backend is configured (set EMAIL_URL)."
    )
    assert notification.emailed_at is None
    assert mail.outbox == []


def test_released_funds_notify_the_contractor():
    milestone = MilestoneFactory()

    milestone_event(milestone, type="milestone.released", status="released")

    assert list(Notification.objects.values_list("user_id", "kind")) == [
        (milestone.project.contractor_id, "funds_released")
    ]


def test_a_failed_payment_notifies_the_payer_named_in_the_data():
    milestone = MilestoneFactory()
    homeowner = milestone.project.homeowner

    committed(
        "payment.failed",
        {
            "payment_id": 3,
            "amount": 10,
            "currency": "usd",
            "status": "failed",
            "payer_id": homeowner.pk,
            "failure_code": "card_declined",
            "failure_message": "Your card was declined.",
        },
        audience=[homeowner, milestone.project.contractor],
        aggregate=("payment", 3),
    )

    notification = Notification.objects.get()
    assert notification.user == homeowner
    # Told in words and money as people write it (issue 16), never the code or minor units.
    assert "Your card was declined." in notification.body
    assert "0.10 USD" in notification.body
    assert "card_declined" not in notification.body and "minor units" not in notification.body


def test_dispute_updates_notify_every_party():
    milestone = MilestoneFactory()
    project = milestone.project

    committed(
        "dispute.status_updated",
        {"dispute_id": 1, "status": "under_review"},
        audience=[project.homeowner, project.contractor],
        aggregate=("dispute", 1),
    )

    assert set(Notification.objects.values_list("user_id", flat=True)) == {
        project.homeowner_id,
        project.contractor_id,
    }


def test_events_nobody_must_act_on_notify_nobody():
    milestone = MilestoneFactory()

    milestone_event(milestone, new_status="funded", previous_status="funding")
    milestone_event(milestone, type="escrow.balance_changed")

    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_email_follows_the_preference_but_the_in_app_notification_stays():
    milestone = MilestoneFactory()
    homeowner = milestone.project.homeowner
    notification_preference_update(user=homeowner, email_muted_kinds=["milestone_submitted"])

    milestone_event(milestone, new_status="submitted")

    assert Notification.objects.get().email_status == "not_wanted"
    assert mail.outbox == []


def test_publishing_twice_notifies_once():
    from realtime.publishing import publish_events

    milestone = MilestoneFactory()
    event = milestone_event(milestone, new_status="submitted")

    publish_events([event.pk])

    assert Notification.objects.count() == 1
    assert len(mail.outbox) == 1


def test_unread_list_and_mark_read_through_the_api(homeowner, stranger):
    from realtime.services.notifications import notification_create

    first = notification_create(user_id=homeowner.user.pk, kind="payment_due", key="a", title="A")
    second = notification_create(user_id=homeowner.user.pk, kind="payment_due", key="b", title="B")

    listed = homeowner.get("/api/v1/notifications?unread=true").json()
    marked = homeowner.post(f"/api/v1/notifications/{first.pk}/read")
    refused = stranger.post(f"/api/v1/notifications/{second.pk}/read")
    after = homeowner.get("/api/v1/notifications?unread=true").json()

    assert [n["id"] for n in listed["results"]] == [second.pk, first.pk]
    assert listed["unread_count"] == 2
    assert marked.status_code == 200
    assert marked.json()["is_read"] is True
    assert refused.status_code == 404
    assert [n["id"] for n in after["results"]] == [second.pk]
    assert stranger.get("/api/v1/notifications").json()["results"] == []
    assert homeowner.post("/api/v1/notifications/read-all").json() == {"marked": 1}
    assert homeowner.get("/api/v1/notifications?unread=true").json()["unread_count"] == 0


def test_preferences_api(homeowner):
    assert homeowner.get("/api/v1/notification-preferences").json() == {
        "email_enabled": True,
        "email_muted_kinds": [],
    }

    response = homeowner.patch(
        "/api/v1/notification-preferences", {"email_enabled": False}, format="json"
    )
    bad = homeowner.patch(
        "/api/v1/notification-preferences", {"email_muted_kinds": ["nope"]}, format="json"
    )

    assert response.json()["email_enabled"] is False
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("type", "extra", "kind"),
    [
        ("milestone.funded", {}, "milestone_funded"),
        ("milestone.status_updated", {"new_status": "inspection"}, "inspection_requested"),
        ("milestone.refunded", {"refunded_amount": 2500}, "milestone_refunded"),
    ],
)
def test_the_contractor_is_told_when_a_milestone_is_funded_inspected_or_refunded(type, extra, kind):
    """The contractor hears of what concerns them (they can start; an inspection was asked
    for; money went back), not only of releases; the homeowner gets none of these."""
    milestone = MilestoneFactory(amount=175050)

    milestone_event(milestone, type=type, **extra)

    (notification,) = Notification.objects.all()
    assert (notification.user_id, notification.kind) == (milestone.project.contractor_id, kind)
    amount = "25.00 USD" if "refunded_amount" in extra else "1,750.50 USD"
    assert amount in notification.body


@pytest.mark.parametrize(
    ("type", "extra"),
    [
        ("milestone.status_updated", {"new_status": "submitted"}),
        ("milestone.released", {}),
        ("milestone.funded", {}),
        ("milestone.status_updated", {"new_status": "inspection"}),
        ("milestone.refunded", {"refunded_amount": 175050}),
        ("billing.payment_due", {}),
        ("payment.failed", {"failure_message": "Your card has insufficient funds."}),
    ],
)
def test_every_notification_and_its_email_write_money_through_the_formatter(type, extra):
    """Whatever the rule, an amount in a notification and its e-mail is formatted money
    (common.money.format_amount), never the raw count of minor units."""
    from common.money import format_amount

    milestone = MilestoneFactory(amount=175050)

    milestone_event(milestone, type=type, **extra)

    notifications = list(Notification.objects.all())
    assert notifications
    for notification in notifications:
        assert format_amount(175050, "usd") in notification.body
        assert "175050" not in notification.body and "minor units" not in notification.body
    for message in mail.outbox:
        assert "175050" not in message.body and "minor units" not in message.body
