"""The data behind each portal page, read through the permission-checked selectors."""

from datetime import date

from django.urls import reverse
from django.utils import timezone

from escrow import selectors as escrow_selectors
from escrow.models import Milestone, Project
from portal import payments_bridge, presenters
from portal import selectors as portal_selectors
from realtime import selectors as realtime_selectors
from realtime.events import OPERATOR_CHANNELS

DASHBOARD_PROJECTS = 12


def user_channels(user) -> list[str]:
    """The channels every page of this user follows live; operators also get theirs (the
    circuit breakers), so an alert reaches whatever page they have open."""
    channels = [f"user.{user.pk}.payments", f"user.{user.pk}.milestones"]
    if user.is_staff:
        channels += OPERATOR_CHANNELS
    return channels


def _days_left(day: date | None) -> int | None:
    return None if day is None else (day - timezone.localdate()).days


def dashboard_context(*, user) -> dict:
    projects = list(escrow_selectors.project_list_for_user(user=user)[:DASHBOARD_PROJECTS])
    balances = sorted(escrow_selectors.balances_for_user(user=user).items())
    bars = []
    for project in projects:
        if project.status == Project.Status.CANCELLED:
            continue
        utilization = escrow_selectors.project_utilization(project=project)
        if user.pk == project.contractor_id:
            bars.append(presenters.earnings_bar(project=project, utilization=utilization))
        else:
            bars.append(presenters.utilization_bar(project=project, utilization=utilization))
    due = []
    awaiting = []
    for project in projects:
        for milestone in project.milestones.all():
            if (
                milestone.status == Milestone.Status.PENDING
                and project.status == Project.Status.ACTIVE
                and user.pk == project.homeowner_id
            ):
                due.append(
                    {
                        "milestone": milestone,
                        "project": project,
                        "days_left": _days_left(milestone.due_date),
                    }
                )
            elif milestone.status == Milestone.Status.SUBMITTED and milestone.review_deadline:
                awaiting.append({"milestone": milestone, "project": project})
    due.sort(key=lambda item: (item["milestone"].due_date is None, item["milestone"].due_date))
    funding = [
        {"milestone": milestone, "project": project}
        for project in projects
        for milestone in project.milestones.all()
        if milestone.status == Milestone.Status.FUNDING
    ]
    open_payments = [
        {"payment": payment, "steps": presenters.payment_steps(payment.status)}
        for payment in payments_bridge.open_payments_for_user(user=user)
    ]
    return {
        "balances": balances,
        "bars": bars,
        "chart_width": presenters.CHART_WIDTH,
        "is_contractor": user.role == "contractor",
        "due": due,
        "awaiting": awaiting,
        "open_payments": open_payments,
        "funding": funding,
        "activity": portal_selectors.recent_events_for_user(user=user),
        "projects": projects,
        "channels": user_channels(user),
        "last_event_id": portal_selectors.last_event_id_for_user(user=user),
    }


def _payment_row(user, payment, *, return_url: str) -> dict:
    timeline = payments_bridge.payment_timeline(user=user, payment_id=payment.pk)
    return {
        "payment": payment,
        "steps": presenters.payment_steps(payment.status, timeline),
        "timeline": timeline,
        "challenge": payments_bridge.payment_challenge(
            user=user, payment=payment, return_url=return_url
        ),
    }


def project_context(*, user, project_id: int) -> dict:
    """Raises ProjectNotFound for anyone who is not a party or an operator."""
    project = escrow_selectors.project_get_for_user(user=user, project_id=project_id)
    milestones = list(project.milestones.all())
    held = escrow_selectors.escrow_balances_by_milestone([m.pk for m in milestones])
    payments = payments_bridge.payments_by_milestone(
        user=user, milestone_ids=[m.pk for m in milestones]
    )
    payouts = payments_bridge.payouts_by_milestone(
        user=user, milestone_ids=[m.pk for m in milestones]
    )
    methods = (
        payments_bridge.usable_payment_methods(user=user) if user.pk == project.homeowner_id else []
    )
    project_url = reverse("portal:project", kwargs={"project_id": project.pk})
    rows = []
    for milestone in milestones:
        rows.append(
            {
                "milestone": milestone,
                "held": held.get(milestone.pk, 0),
                "payout": payouts.get(milestone.pk),
                "days_left": _days_left(milestone.due_date),
                "steps": presenters.milestone_steps(milestone.status),
                "actions": presenters.milestone_actions(
                    milestone=milestone, project=project, user=user
                ),
                "payments": [
                    _payment_row(
                        user,
                        payment,
                        return_url=f"{project_url}#milestone-{milestone.pk}",
                    )
                    for payment in payments.get(milestone.pk, [])
                ],
                "timeline": realtime_selectors.event_list_for_aggregate(
                    aggregate_type="milestone", aggregate_id=milestone.pk
                ),
            }
        )
    return {
        "project": project,
        "rows": rows,
        "escrow_total": sum(held.values()),
        "utilization": escrow_selectors.project_utilization(project=project),
        "can_sign": presenters.can_sign(project=project, user=user),
        "is_homeowner": user.pk == project.homeowner_id,
        "payment_methods": methods,
        "stripe_publishable_key": payments_bridge.stripe_publishable_key(),
        "default_method_id": next((m.pk for m in methods if m.is_default), None),
        "channels": [f"project.{project.pk}", *user_channels(user)],
        "last_event_id": portal_selectors.last_event_id_for_user(user=user),
    }
