"""Payment-due reminders: homeowners of unfunded milestones hear about them once before the due
date and once after it passes, as a live event, an in-app notification and an e-mail; nothing
for funded, far-off, undated or draft-project milestones; repeated and racing runs send once."""

import threading
from datetime import date, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import TestCase

from billing import services
from billing.models import PaymentDueReminder
from realtime.models import Event, Notification
from tests.conftest import requires_postgres
from tests.escrow.factories import DraftProjectFactory, MilestoneFactory, fund

pytestmark = pytest.mark.django_db

TODAY = date(2027, 3, 10)


def send(today=TODAY):
    """One beat run, with its after-commit work (sequencing, notifications, e-mail)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.payment_due_reminders_send(today=today)


def test_an_unfunded_milestone_due_soon_reminds_its_homeowner_once(settings):
    settings.PAYMENT_DUE_REMINDER_DAYS = 3
    milestone = MilestoneFactory(title="Tiles", due_date=TODAY + timedelta(days=2), amount=45_000)
    homeowner = milestone.project.homeowner
    homeowner.email = "owner@example.com"
    homeowner.save()

    first, second = send(), send()

    event = Event.objects.get(type="billing.payment_due")
    notification = Notification.objects.get(kind="payment_due")
    assert (first, second) == (1, 0)
    assert event.position is not None
    assert event.data["milestone_id"] == milestone.pk
    assert event.data["days_left"] == 2 and event.data["reminder"] == "upcoming"
    assert event.data["amount"] == 45_000 and event.data["currency"] == "usd"
    assert f"project.{milestone.project_id}" in event.channels
    assert notification.user == homeowner
    assert "Tiles" in notification.body
    assert [m.to for m in mail.outbox] == [["owner@example.com"]]


def test_once_overdue_it_reminds_again_once_and_a_new_due_date_starts_over(settings):
    settings.PAYMENT_DUE_REMINDER_DAYS = 3
    milestone = MilestoneFactory(due_date=TODAY)

    upcoming = send()
    overdue = send(today=TODAY + timedelta(days=1))
    overdue_again = send(today=TODAY + timedelta(days=5))
    milestone.due_date = TODAY + timedelta(days=20)
    milestone.save(update_fields=["due_date"])
    moved = send(today=TODAY + timedelta(days=18))

    kinds = list(PaymentDueReminder.objects.order_by("id").values_list("kind", flat=True))
    assert (upcoming, overdue, overdue_again, moved) == (1, 1, 0, 1)
    assert kinds == ["upcoming", "overdue", "upcoming"]


def test_funded_far_off_undated_and_draft_project_milestones_are_not_reminded(settings):
    settings.PAYMENT_DUE_REMINDER_DAYS = 3
    funded = MilestoneFactory(due_date=TODAY)
    fund(funded)
    MilestoneFactory(due_date=TODAY + timedelta(days=4))
    MilestoneFactory(due_date=None)
    MilestoneFactory(project=DraftProjectFactory(), due_date=TODAY)

    assert send() == 0
    assert not PaymentDueReminder.objects.exists()
    assert not Event.objects.filter(type="billing.payment_due").exists()


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_beat_runs_at_once_send_one_reminder(settings):
    settings.PAYMENT_DUE_REMINDER_DAYS = 3
    MilestoneFactory(due_date=TODAY)
    barrier = threading.Barrier(2)
    sent = []

    def run():
        barrier.wait(10)
        sent.append(services.payment_due_reminders_send(today=TODAY))
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert sorted(sent) == [0, 1]
    assert PaymentDueReminder.objects.count() == 1
    assert Event.objects.filter(type="billing.payment_due").count() == 1
