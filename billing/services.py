"""Billing's writes. For now: payment-due reminders for milestones not funded by their due date.

A reminder is an event (`billing.payment_due`), so it reaches the homeowner live, as an in-app
notification and an e-mail (realtime's notification rule for payment_due), and integrators'
webhooks, like every other change."""

from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import PaymentDueReminder
from escrow.models import Milestone, Project
from realtime.events import emit


def payment_due_reminders_send(*, today: date | None = None, batch_size: int = 500) -> int:
    """Remind homeowners of milestones still `pending` (not being funded) on an active project
    whose due date is within PAYMENT_DUE_REMINDER_DAYS (kind `upcoming`) or has passed
    (`overdue`). Each (milestone, due date, kind) is reminded once; safe to run repeatedly
    and concurrently (a unique row per reminder, inserted in the event's transaction).
    Returns how many reminders it sent."""
    today = today or timezone.localdate()
    horizon = today + timedelta(days=settings.PAYMENT_DUE_REMINDER_DAYS)
    candidates = (
        Milestone.objects.filter(
            status=Milestone.Status.PENDING,
            project__status=Project.Status.ACTIVE,
            due_date__isnull=False,
            due_date__lte=horizon,
        )
        .select_related("project")
        .order_by("due_date", "id")[:batch_size]
    )
    sent = 0
    for milestone in candidates:
        kind = (
            PaymentDueReminder.Kind.OVERDUE
            if milestone.due_date < today
            else PaymentDueReminder.Kind.UPCOMING
        )
        if _remind(milestone=milestone, kind=kind, today=today):
            sent += 1
    return sent


def _remind(*, milestone: Milestone, kind: str, today: date) -> bool:
    project = milestone.project
    try:
        with transaction.atomic():
            PaymentDueReminder.objects.create(
                milestone=milestone, due_date=milestone.due_date, kind=kind
            )
            emit(
                "billing.payment_due",
                {
                    "milestone_id": milestone.pk,
                    "project_id": project.pk,
                    "title": milestone.title,
                    "amount": milestone.amount,
                    "currency": project.currency,
                    "status": milestone.status,
                    "due_date": milestone.due_date.isoformat(),
                    "days_left": (milestone.due_date - today).days,
                    "reminder": kind,
                    "homeowner_id": project.homeowner_id,
                },
                aggregate=("milestone", milestone.pk),
                audience=[project.homeowner_id, project.contractor_id],
                channels=[f"project.{project.pk}", f"user.{project.homeowner_id}.milestones"],
            )
    except IntegrityError:
        return False  # reminded already (this run raced another, or an earlier run)
    return True
