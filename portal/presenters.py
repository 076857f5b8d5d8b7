"""What the portal shows, derived from domain objects: labels, the steps of a tracker, which
actions a viewer is offered, chart geometry, one-line event summaries.

Nothing here decides whether an action is allowed: the services do that and the views show
their errors. Offering an action is only a hint of what is likely to succeed right now."""

from dataclasses import dataclass, field

from escrow import actions
from escrow.models import Milestone, Project
from escrow.money import format_amount

STATUS_LABELS = {
    "pending": "Awaiting funding",
    "funding": "Funding in progress",
    "funded": "Funded (in escrow)",
    "submitted": "Work submitted",
    "inspection": "Inspection requested",
    "approved": "Approved",
    "released": "Released",
    "disputed": "Disputed",
    "refunded": "Refunded",
    "split": "Split settlement",
    "cancelled": "Cancelled",
    "draft": "Draft (awaiting signatures)",
    "active": "Active",
    "completed": "Completed",
    "initiated": "Initiated",
    "processing": "Processing",
    "verifying": "Verifying (3-D Secure)",
    "authorized": "Authorized",
    "failed": "Failed",
    "rejected": "Rejected",
    "declined": "Declined",
    "partially_refunded": "Partially refunded",
    "verified": "Verified",
    "expired": "Expired",
    "removed": "Removed",
    "paid": "Paid",
    "needs_account": "Waiting for a payout account",
}

MILESTONE_STEPS = ["pending", "funding", "funded", "submitted", "approved", "released"]
PAYMENT_STEPS = ["initiated", "processing", "verifying", "authorized", "completed"]


@dataclass(frozen=True)
class Step:
    status: str
    label: str
    state: str  # "done", "current" or "upcoming"


def _steps(order: list[str], current: str, visited: set[str] | None = None) -> list[Step]:
    """Each step done, current or upcoming; with `visited` (the statuses the timeline shows),
    a step the object went past without entering (a card without 3-D Secure never verifies)
    is "skipped"."""
    if current not in order:
        return [Step(status, STATUS_LABELS.get(status, status), "upcoming") for status in order]
    index = order.index(current)
    steps = []
    for i, status in enumerate(order):
        state = "done" if i < index else "current" if i == index else "upcoming"
        if state == "done" and visited is not None and i > 0 and status not in visited:
            state = "skipped"
        steps.append(Step(status, STATUS_LABELS.get(status, status), state))
    return steps


def milestone_steps(status: str) -> list[Step]:
    order = list(MILESTONE_STEPS)
    if status == "inspection":
        order.insert(order.index("approved"), "inspection")
    return _steps(order, status)


def payment_steps(status: str, timeline=None) -> list[Step]:
    visited = None
    if timeline is not None:
        visited = {str((event.data or {}).get("new_status")) for event in timeline}
    return _steps(PAYMENT_STEPS, status, visited)


@dataclass(frozen=True)
class Action:
    """A button on the project page. `money` actions get a confirmation step."""

    name: str  # the URL segment: fund, submit, request-inspection, approve, refund, cancel
    label: str
    confirm: str = ""
    money: bool = False
    danger: bool = False


def milestone_actions(*, milestone: Milestone, project: Project, user) -> list[Action]:
    """The actions worth offering `user` for `milestone` in its current state: the ones
    escrow's action → role table and the milestone's transition table allow
    (escrow.actions.offered, which the services enforce), in words. Money actions name what
    they move: a release or refund moves what escrow holds now (`held_amount`, net of partial
    refunds), a funding the milestone's amount."""
    amount = format_amount(milestone.amount, project.currency)
    held = format_amount(milestone.held_amount, project.currency)
    buttons = {
        "fund": Action(
            "fund", f"Fund {amount}", f"Charge {amount} to your card into escrow?", True
        ),
        "submit": Action("submit", "Mark work as done"),
        "request_inspection": Action("request-inspection", "Request an inspection"),
        "approve": Action(
            "approve",
            f"Approve and release {held}",
            f"Release {held} from escrow to the contractor? This cannot be undone.",
            True,
        ),
        "refund": Action(
            "refund",
            f"Refund {held}",
            f"Return {held} from escrow to the homeowner's card?",
            True,
            danger=True,
        ),
        "cancel": Action(
            "cancel",
            "Cancel milestone",
            "Cancel this milestone? It cannot be funded afterwards.",
            danger=True,
        ),
    }
    return [buttons[name] for name in actions.offered(user, milestone, project)]


ACTION_NAMES = {"fund", "submit", "request-inspection", "approve", "refund", "cancel"}
MONEY_ACTIONS = {"fund", "approve", "refund"}


def can_sign(*, project: Project, user) -> bool:
    if project.status != Project.Status.DRAFT:
        return False
    if user.pk == project.homeowner_id:
        return project.homeowner_signed_at is None
    if user.pk == project.contractor_id:
        return project.contractor_signed_at is None
    return False


# --- Charts -------------------------------------------------------------------------------------

CHART_WIDTH = 320


@dataclass
class Bar:
    """One project's row in the utilization chart: stacked segments over the budget."""

    project_id: int
    title: str
    currency: str
    total: int
    segments: list[dict] = field(default_factory=list)
    percent_used: int = 0


def utilization_bar(*, project: Project, utilization) -> Bar:
    """Budget utilization: released, held in escrow, not yet funded (widths in SVG units)."""
    budget = max(utilization.budget, 1)
    parts = [
        ("released", "Released", utilization.released),
        ("held", "In escrow", utilization.held),
        ("remaining", "Not yet funded", utilization.remaining),
    ]
    return _bar(project, budget, utilization.budget, parts, utilization.released)


def earnings_bar(*, project: Project, utilization) -> Bar:
    """A contractor's earnings: earned (net of fees), platform fees, held, still to fund."""
    budget = max(utilization.budget, 1)
    parts = [
        ("released", "Earned", utilization.released - utilization.fees),
        ("fees", "Platform fees", utilization.fees),
        ("held", "In escrow", utilization.held),
        ("remaining", "Not yet funded", utilization.remaining),
    ]
    return _bar(project, budget, utilization.budget, parts, utilization.released)


def _bar(project, budget, total, parts, used) -> Bar:
    x = 0
    segments = []
    for kind, label, amount in parts:
        width = round(CHART_WIDTH * max(amount, 0) / budget)
        width = min(width, CHART_WIDTH - x)
        segments.append(
            {
                "kind": kind,
                "label": label,
                "amount": amount,
                "x": x,
                "width": width,
                "text": format_amount(max(amount, 0), project.currency),
            }
        )
        x += width
    return Bar(
        project_id=project.pk,
        title=project.title,
        currency=project.currency,
        total=total,
        segments=segments,
        percent_used=min(round(100 * used / budget), 100),
    )


# --- Events -------------------------------------------------------------------------------------


def _money(data: dict, key: str = "amount") -> str:
    if data.get(key) is None or not data.get("currency"):
        return ""
    try:
        return format_amount(int(data[key]), str(data["currency"]))
    except (TypeError, ValueError):
        return ""


def _payment_party(data: dict, viewer) -> str:
    """ "payer", "payee" or "" (an operator, or nobody given: the full, raw account)."""
    viewer_id = getattr(viewer, "pk", None)
    if viewer_id is None or getattr(viewer, "is_staff", False):
        return ""
    if viewer_id == data.get("payer_id"):
        return "payer"
    if viewer_id == data.get("payee_id"):
        return "payee"
    return ""


def event_summary(event_type: str, data: dict, viewer=None) -> str:
    """One readable line for an event of the store (activity feed, timelines), told for
    `viewer`: each party reads what concerns them, in words (the contractor never sees the
    homeowner's card or decline reason); operators and callers without a viewer get the
    full account with the raw status values and codes."""
    title = f"“{data['title']}”" if data.get("title") else ""
    amount = _money(data)
    label = STATUS_LABELS.get(str(data.get("new_status") or data.get("status") or ""), "")
    party = _payment_party(data, viewer) if event_type.startswith("payment.") else ""
    if event_type == "payment.started":
        return f"Payment of {amount} started"
    if event_type == "payment.status_updated":
        if party:
            new = STATUS_LABELS.get(str(data.get("new_status")), str(data.get("new_status")))
            return f"Payment of {amount}: {new.lower()}"
        return f"Payment of {amount}: {data.get('previous_status')} → {data.get('new_status')}"
    if event_type == "payment.completed":
        return f"Payment of {amount} completed"
    if event_type == "payment.failed" and party == "payee":
        return f"The homeowner's payment of {amount} did not go through; nothing is needed from you"
    if event_type == "payment.failed" and party == "payer":
        reason = data.get("failure_message") or "the card was not charged."
        return f"Payment of {amount} failed: {reason}"
    if event_type == "payment.failed":
        if data.get("failure_message"):
            return f"Payment of {amount} failed: {data['failure_message']}"
        code = data.get("failure_code") or "failed"
        return f"Payment of {amount} failed ({code})"
    if event_type == "payment.refunded":
        return f"Payment refunded: {_money(data, 'amount_refunded') or amount}"
    if event_type == "milestone.status_updated":
        return f"Milestone {title}: {label}".strip()
    if event_type == "milestone.funded":
        return f"Milestone {title} funded with {amount}"
    if event_type == "milestone.released":
        payout = _money(data, "payout_amount")
        return f"Milestone {title} released" + (f": {payout} to the contractor" if payout else "")
    if event_type == "milestone.refunded":
        return f"Milestone {title} refunded"
    if event_type == "escrow.balance_changed":
        return (
            f"Escrow balance {_money(data, 'previous_balance')} → {_money(data, 'new_balance')}"
            f" ({data.get('reason', 'changed')})"
        )
    if event_type == "contract.signed":
        return f"Contract {title} signed by both parties"
    if event_type == "project.created":
        return f"Project {title} created"
    if event_type == "project.signed":
        return f"Project {title} signed by the {data.get('role') or 'party'}"
    if event_type == "project.status_updated":
        return f"Project {title}: {label}".strip()
    if event_type.startswith("payout."):
        return f"Payout of {amount}: {data.get('status', event_type.split('.', 1)[1])}"
    if event_type.startswith("payment_method."):
        return f"Payment method: {data.get('status', '')}"
    return event_type.replace("_", " ").replace(".", ": ")


def countdown_text(moment, now=None) -> str:
    """Human countdown to a date (days) or a datetime (days, hours, minutes)."""
    from datetime import date, datetime

    from django.utils import timezone

    if moment is None:
        return "no due date"
    now = now or timezone.now()
    if isinstance(moment, datetime):
        seconds = int((moment - now).total_seconds())
        past = seconds < 0
        seconds = abs(seconds)
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes = rest // 60
        if days:
            text = f"{days} d {hours} h"
        elif hours:
            text = f"{hours} h {minutes} min"
        else:
            text = f"{minutes} min"
        return f"{text} ago" if past else f"in {text}"
    if isinstance(moment, date):
        days = (moment - timezone.localdate(now)).days
        if days == 0:
            return "due today"
        if days < 0:
            return f"{-days} day{'s' if days != -1 else ''} overdue"
        return f"due in {days} day{'s' if days != 1 else ''}"
    return str(moment)
