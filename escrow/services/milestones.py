"""Writes to milestones: every status change and the ledger entries that go with it.

Each entry point takes the locks in the documented order (project → milestone → ledger
accounts), reads the status from the locked row, checks it against Milestone.TRANSITIONS,
posts the ledger, emits events and registers after-commit work, all in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common import transitions
from escrow import fees, ledger, reactions
from escrow.actions import require, require_from
from escrow.exceptions import (
    IllegalTransition,
    InsufficientFunds,
)
from escrow.locks import milestone_for_update
from escrow.models import JournalEntry, Milestone
from escrow.services._events import (
    emit_balance_changed,
    emit_milestone,
    emit_status_updated,
    project_escrow_balance,
)
from escrow.services.projects import complete_if_settled

if TYPE_CHECKING:
    from accounts.models import User
    from common.bulk import Saves

Status = Milestone.Status

_TIMESTAMPS = {
    Status.FUNDED: "funded_at",
    Status.SUBMITTED: "submitted_at",
    Status.APPROVED: "approved_at",
    Status.RELEASED: "released_at",
    Status.REFUNDED: "refunded_at",
    Status.SPLIT: "released_at",
}


def transition(
    milestone: Milestone,
    *,
    to: str,
    actor: User | None,
    leaving_dispute: bool = False,
    changes: dict | None = None,
    saves: Saves | None = None,
) -> str:
    """Move a locked milestone to `to` through common.transitions (its table), with the
    timestamp of the state it enters (and a new review window when it enters submitted) and
    the caller's `changes`; emit milestone.status_updated. Caller holds the milestone's lock.
    `saves`: a batch's collector for the row's UPDATE. Returns the previous status.

    A frozen (disputed) milestone is left only by milestone_settle_dispute and
    milestone_unfreeze, which say so with `leaving_dispute`; every other way out of a freeze
    (a refund, an approval) is refused here, whatever the table allows."""
    previous = milestone.status
    if previous == Status.DISPUTED and not leaving_dispute:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}",
            current=previous,
            target=f"{to} (its escrow is frozen until the dispute is settled)",
        )
    changes = dict(changes or {})
    now = timezone.now()
    if to in _TIMESTAMPS:
        changes[_TIMESTAMPS[to]] = now
    if to == Status.SUBMITTED:
        changes["review_deadline"] = now + settings.MILESTONE_REVIEW_WINDOW
    transitions.transition(milestone, to=to, changes=changes, saves=saves)
    emit_status_updated(milestone, previous=previous, actor_id=actor.pk if actor else None)
    return previous


def _already(milestone: Milestone, *states: str) -> bool:
    return milestone.status in states


# --- The work ---------------------------------------------------------------------------------


def milestone_submit(*, milestone_id: int, actor: User) -> Milestone:
    """The contractor says the work is done: funded → submitted; the review window starts.

    Idempotent. Raises MilestoneNotFound, NotAllowed (not the contractor), IllegalTransition.
    Emits milestone.status_updated.
    """
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        require(actor, milestone, "submit")
        if not _already(milestone, Status.SUBMITTED):
            transition(milestone, to=Status.SUBMITTED, actor=actor)
    return milestone


def milestone_request_inspection(*, milestone_id: int, actor: User) -> Milestone:
    """The homeowner asks for an inspection before approving: submitted → inspection.
    Stops the auto-release clock. Idempotent. Raises as milestone_submit."""
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        require(actor, milestone, "request_inspection")
        if not _already(milestone, Status.INSPECTION):
            transition(milestone, to=Status.INSPECTION, actor=actor)
    return milestone


def milestone_approve(*, milestone_id: int, actor: User | None) -> Milestone:
    """Approve a submitted (or inspected) milestone and release its escrow.

    Caller: the homeowner, or None for the auto-release after the review window. Idempotent:
    approving a released milestone returns it. Raises MilestoneNotFound, NotAllowed,
    IllegalTransition. Posts Dr escrow / Cr contractor payable (amount − fee) / Cr revenue
    (fee); emits milestone.status_updated (×2), milestone.released, escrow.balance_changed;
    the payout starts after commit (reactions.milestone_settled).
    """
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        require(actor, milestone, "approve")
        if _already(milestone, Status.RELEASED):
            return milestone
        transition(milestone, to=Status.APPROVED, actor=actor)
        _settle(milestone, release_amount=milestone.held_amount, to=Status.RELEASED, actor=actor)
    return milestone


def milestone_refund(*, milestone_id: int, actor: User) -> Milestone:
    """Give the escrow back to the homeowner: funded|submitted → refunded.

    Caller: the homeowner before the contractor submits, or an operator (also after submit).
    Idempotent. Raises MilestoneNotFound, NotAllowed, IllegalTransition. Posts Dr escrow /
    Cr gateway; the gateway refund runs after commit (reactions.milestone_settled).
    """
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        return milestone_refund_locked(milestone, actor=actor)


def milestone_refund_locked(milestone: Milestone, *, actor: User) -> Milestone:
    """milestone_refund's action on a milestone whose lock the caller holds (payments, when an
    operator's refund of a whole payment is this refund). Refunds what escrow holds beyond
    what pending refunds already hold (their holds are theirs); refuses a frozen milestone
    (transition) and one whose escrow pending refunds hold entirely (InsufficientFunds)."""
    assert transaction.get_connection().in_atomic_block, "the caller holds the milestone's lock"
    require(actor, milestone, "refund")
    if _already(milestone, Status.REFUNDED):
        return milestone
    require_from(actor, milestone, "refund")
    _settle(milestone, release_amount=0, to=Status.REFUNDED, actor=actor)
    return milestone


def milestone_cancel(*, milestone_id: int, actor: User) -> Milestone:
    """Drop a milestone nobody has paid for: pending → cancelled. Homeowner or operator.
    Idempotent. Raises MilestoneNotFound, NotAllowed, IllegalTransition."""
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        require(actor, milestone, "cancel")
        if not _already(milestone, Status.CANCELLED):
            transition(milestone, to=Status.CANCELLED, actor=actor)
            complete_if_settled(milestone.project)
    return milestone


def _settle(
    milestone: Milestone,
    *,
    release_amount: int,
    to: str,
    actor: User | None,
    leaving_dispute: bool = False,
    fee_policy: fees.FeePolicy | None = None,
) -> None:
    """Move the whole escrow out in one entry and fire reactions.milestone_settled. Caller
    holds the milestone's lock inside its transaction. The fee on the released part comes
    from `fee_policy`, else the configured one (escrow/fees.py). The escrow is `held_amount`:
    what pending refunds hold stays in their holds (escrow/services/holds.py). Raises
    InsufficientFunds when pending refunds hold all of it (nothing to settle until they end)."""
    if milestone.held_amount == 0:
        raise InsufficientFunds(
            f"Milestone {milestone.pk}'s escrow is all promised to pending refunds "
            f"({milestone.refund_holds}); nothing is left to settle until they end."
        )
    previous_balance = project_escrow_balance(milestone.project_id)
    fee = fees.fee_for(milestone, release_amount, fee_policy) if release_amount else 0
    kind = {
        Status.RELEASED: JournalEntry.Kind.RELEASE,
        Status.REFUNDED: JournalEntry.Kind.REFUND,
        Status.SPLIT: JournalEntry.Kind.SPLIT,
    }[to]
    transition(milestone, to=to, actor=actor, leaving_dispute=leaving_dispute)
    ledger.post_settlement(
        milestone=milestone,
        release_amount=release_amount,
        fee=fee,
        kind=kind,
        reference=f"{kind}:{milestone.pk}",
    )
    refund_amount = milestone.held_amount - release_amount
    if release_amount:
        emit_milestone(
            "milestone.released",
            milestone,
            released_amount=release_amount,
            fee=fee,
            payout_amount=release_amount - fee,
        )
    if refund_amount:
        emit_milestone("milestone.refunded", milestone, refunded_amount=refund_amount)
    reactions.milestone_settled.fire(
        reactions.Settlement(
            milestone_id=milestone.pk,
            project_id=milestone.project_id,
            status=to,
            currency=milestone.project.currency,
            released_amount=release_amount,
            fee=fee,
            refunded_amount=refund_amount,
        )
    )
    emit_balance_changed(milestone, previous_project_balance=previous_balance, reason=to)
    complete_if_settled(milestone.project)


# --- Beat -------------------------------------------------------------------------------------


def milestone_auto_release_due(*, now=None, batch_size: int = 100) -> list[int]:
    """Release submitted milestones whose review window passed without an approval, an
    inspection request or a dispute. Each runs in its own transaction; a milestone that moved
    meanwhile is skipped (the locked row is re-read). Returns the ids released."""
    now = now or timezone.now()
    due = list(
        Milestone.objects.filter(status=Status.SUBMITTED, review_deadline__lte=now)
        .order_by("review_deadline")
        .values_list("pk", flat=True)[:batch_size]
    )
    released = []
    for milestone_id in due:
        with transaction.atomic(durable=True):
            milestone = milestone_for_update(milestone_id=milestone_id)
            if milestone.status != Status.SUBMITTED or milestone.review_deadline > now:
                continue
            if milestone.held_amount == 0:
                continue  # all promised to pending refunds; released once they end
            transition(milestone, to=Status.APPROVED, actor=None)
            _settle(milestone, release_amount=milestone.held_amount, to=Status.RELEASED, actor=None)
            released.append(milestone_id)
    return released
