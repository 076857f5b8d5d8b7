"""Reads that depend on who is asking. Parties of a project and operators see it; anyone else
is told it does not exist."""

from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Q, QuerySet, Sum

from escrow import ledger
from escrow.exceptions import MilestoneNotFound, ProjectNotFound
from escrow.models import JournalEntry, LedgerAccount, Milestone, Project


def _visible_projects(user) -> QuerySet[Project]:
    projects = Project.objects.all()
    if user.is_staff:
        return projects
    return projects.filter(Q(homeowner=user) | Q(contractor=user))


def project_list_for_user(*, user) -> QuerySet[Project]:
    return (
        _visible_projects(user)
        .select_related("homeowner", "contractor")
        .prefetch_related("milestones")
        .order_by("-id")
    )


def project_get_for_user(*, user, project_id) -> Project:
    project = project_list_for_user(user=user).filter(pk=project_id).first()
    if project is None:
        raise ProjectNotFound()
    return project


def project_is_visible_to(*, user, project_id) -> bool:
    return _visible_projects(user).filter(pk=project_id).exists()


def milestone_get_for_user(*, user, milestone_id) -> Milestone:
    milestone = (
        Milestone.objects.select_related("project", "project__homeowner", "project__contractor")
        .filter(pk=milestone_id, project__in=_visible_projects(user))
        .first()
    )
    if milestone is None:
        raise MilestoneNotFound()
    return milestone


def milestone_is_visible_to(*, user, milestone_id) -> bool:
    return Milestone.objects.filter(pk=milestone_id, project__in=_visible_projects(user)).exists()


def refund_holds_by_reference() -> dict[str, int]:
    """What each pending refund's hold account holds, by the refund's escrow reference (the
    <reference> of hold:refund:<reference>), for payments' checks in check_ledger."""
    prefix = "hold:refund:"
    rows = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.HOLD).values_list("code", "balance")
    return {code[len(prefix) :]: balance for code, balance in rows if code.startswith(prefix)}


def escrow_balances_by_milestone(milestone_ids) -> dict[int, int]:
    rows = LedgerAccount.objects.filter(
        kind=LedgerAccount.Kind.ESCROW, milestone_id__in=list(milestone_ids)
    ).values_list("milestone_id", "balance")
    return dict(rows)


def milestone_escrow_balance(*, milestone: Milestone) -> int:
    return escrow_balances_by_milestone([milestone.pk]).get(milestone.pk, 0)


def project_escrow_balance(*, project: Project) -> int:
    return ledger.project_escrow_balance(project.pk)


@dataclass(frozen=True)
class Utilization:
    """A project's budget, computed from milestones and the ledger (never stored twice)."""

    budget: int
    funded: int
    released: int
    fees: int
    refunded: int
    held: int
    remaining: int


def project_utilization(*, project: Project) -> Utilization:
    """funded = every funding entry; released = what left escrow to the contractor (gross, fee
    included); refunded = what went back to the homeowner; held = escrow now; remaining =
    budget not yet funded."""
    budget = sum(m.amount for m in project.milestones.exclude(status="cancelled"))
    totals = defaultdict(int)
    entries = JournalEntry.objects.filter(project=project).prefetch_related("postings__account")
    for entry in entries:
        for posting in entry.postings.all():
            kind = posting.account.kind
            if entry.kind == JournalEntry.Kind.FUND and kind == LedgerAccount.Kind.ESCROW:
                totals["funded"] += -posting.amount
            elif entry.kind in ("release", "refund", "split") and posting.amount < 0:
                if kind == LedgerAccount.Kind.GATEWAY:
                    totals["refunded"] += -posting.amount
                elif kind == LedgerAccount.Kind.REVENUE:
                    totals["fees"] += -posting.amount
                    totals["released"] += -posting.amount
                else:
                    totals["released"] += -posting.amount
    held = project_escrow_balance(project=project)
    funded_not_refunded = totals["funded"] - totals["refunded"]
    return Utilization(
        budget=budget,
        funded=totals["funded"],
        released=totals["released"],
        fees=totals["fees"],
        refunded=totals["refunded"],
        held=held,
        remaining=max(budget - funded_not_refunded, 0),
    )


def balances_for_user(*, user) -> dict[str, dict[str, int]]:
    """Per currency: escrow_held (in escrow on the user's projects, for their milestones),
    pending (funding in progress, and refunds the gateway has not confirmed yet: their money
    has left the milestones' escrow for its hold), payable (owed to the user, not yet paid
    out) and paid_out (sent to the user and kept: a transfer the gateway reversed is owed,
    in payable, again, not paid out)."""
    empty = {"escrow_held": 0, "pending": 0, "payable": 0, "paid_out": 0}
    result: dict[str, dict[str, int]] = defaultdict(lambda: dict(empty))
    projects = Project.objects.filter(Q(homeowner=user) | Q(contractor=user))
    held = (
        LedgerAccount.objects.filter(
            kind=LedgerAccount.Kind.ESCROW, milestone__project__in=projects
        )
        .values("currency")
        .annotate(total=Sum("balance"))
    )
    for row in held:
        result[row["currency"]]["escrow_held"] += row["total"] or 0
    pending = (
        Milestone.objects.filter(project__in=projects, status=Milestone.Status.FUNDING)
        .values("project__currency")
        .annotate(total=Sum("amount"))
    )
    for row in pending:
        result[row["project__currency"]]["pending"] += row["total"] or 0
    refunding = (
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.HOLD, milestone__project__in=projects)
        .values("currency")
        .annotate(total=Sum("balance"))
    )
    for row in refunding:
        result[row["currency"]]["pending"] += row["total"] or 0
    for account in LedgerAccount.objects.filter(kind=LedgerAccount.Kind.PAYABLE, user=user):
        result[account.currency]["payable"] += account.balance
    paid = (
        JournalEntry.objects.filter(kind=JournalEntry.Kind.PAYOUT_PAID, party=user)
        .values("currency")
        .annotate(total=Sum("amount"))
    )
    for row in paid:
        result[row["currency"]]["paid_out"] += row["total"] or 0
    reversed_ = (
        JournalEntry.objects.filter(kind=JournalEntry.Kind.PAYOUT_REVERSED, party=user)
        .values("currency")
        .annotate(total=Sum("amount"))
    )
    for row in reversed_:
        result[row["currency"]]["paid_out"] -= row["total"] or 0
    return dict(result)


@dataclass(frozen=True)
class Settlement:
    """What the settlement entry of a milestone moved, for payments to act on."""

    milestone_id: int
    currency: str
    provider: str
    contractor_id: int
    payout_amount: int
    fee: int
    refund_amount: int


def milestone_settlement(*, milestone_id: int) -> Settlement | None:
    """The release/refund/split entry of a milestone, or None while it is not settled."""
    entry = (
        JournalEntry.objects.filter(
            milestone_id=milestone_id, kind__in=["release", "refund", "split"]
        )
        .select_related("milestone__project")
        .prefetch_related("postings__account")
        .first()
    )
    if entry is None:
        return None
    payout = fee = refund = 0
    for posting in entry.postings.all():
        kind = posting.account.kind
        if kind == LedgerAccount.Kind.PAYABLE:
            payout += -posting.amount
        elif kind == LedgerAccount.Kind.REVENUE:
            fee += -posting.amount
        elif kind == LedgerAccount.Kind.GATEWAY:
            refund += -posting.amount
    milestone = entry.milestone
    return Settlement(
        milestone_id=milestone_id,
        currency=entry.currency,
        provider=milestone.funded_via,
        contractor_id=milestone.project.contractor_id,
        payout_amount=payout,
        fee=fee,
        refund_amount=refund,
    )


def milestones_settled_with(*, part: str) -> QuerySet[Milestone]:
    """Milestones whose settlement entry moved money to `part`: "payout" (a release or split:
    the contractor's payable) or "refund" (a refund or split: back to the gateway). For
    payments' sweep, which starts the payout or gateway refund a lost reaction did not."""
    kinds = {
        "payout": [JournalEntry.Kind.RELEASE, JournalEntry.Kind.SPLIT],
        "refund": [JournalEntry.Kind.REFUND, JournalEntry.Kind.SPLIT],
    }[part]
    statuses = {
        "payout": [Milestone.Status.RELEASED, Milestone.Status.SPLIT],
        "refund": [Milestone.Status.REFUNDED, Milestone.Status.SPLIT],
    }[part]
    entries = JournalEntry.objects.filter(milestone=OuterRef("pk"), kind__in=kinds)
    return Milestone.objects.filter(status__in=statuses).filter(Exists(entries))


def funding_posted(*, reference: str) -> bool:
    """Whether escrow posted the funding `reference` (a payment's id) to the ledger."""
    return JournalEntry.objects.filter(reference=f"fund:{reference}").exists()
