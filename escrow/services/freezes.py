"""Freezing a milestone's escrow while a dispute runs, and the ways out of a freeze: lifted
(the dispute ended in the contractor's favour, or was withdrawn) or settled (released,
refunded or split as the dispute decided).

Callers: payments (a gateway charge dispute opened or closed) and disputes. Each joins the
caller's transaction; the locks, the table and the settlement entry are milestones.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from escrow import fees
from escrow.exceptions import IllegalTransition, InsufficientFunds, InvalidInput
from escrow.locks import milestone_for_update
from escrow.models import Milestone
from escrow.services._events import emit_milestone
from escrow.services.milestones import _already, _settle, transition

if TYPE_CHECKING:
    from accounts.models import User

Status = Milestone.Status


def milestone_freeze(*, milestone_id: int, reason: str, actor: User | None = None) -> Milestone:
    """Hold the escrow while a dispute runs: funded|submitted|inspection → disputed.

    Callers: payments (a gateway charge dispute) and disputes. Joins the caller's transaction
    if there is one. Idempotent. Raises MilestoneNotFound, IllegalTransition. Records the
    status it interrupted (`frozen_from`) for milestone_unfreeze.
    """
    with transaction.atomic():
        milestone = milestone_for_update(milestone_id=milestone_id)
        if not _already(milestone, Status.DISPUTED):
            previous = transition(milestone, to=Status.DISPUTED, actor=actor)
            milestone.frozen_from = previous
            milestone.save(update_fields=["frozen_from"])
            emit_milestone("milestone.frozen", milestone, reason=reason[:200])
    return milestone


def milestone_unfreeze(*, milestone_id: int, reason: str, actor: User | None = None) -> Milestone:
    """Lift a freeze that ended in the merchant's favour (a chargeback won or closed, later a
    withdrawn dispute): disputed → the status it had before the freeze (a milestone back in
    `submitted` gets a new review window).

    Callers: payments (charge.dispute.closed) and disputes. Joins the caller's transaction if
    there is one. Idempotent: a milestone that is not frozen is returned unchanged. Raises
    MilestoneNotFound. Emits milestone.status_updated and milestone.unfrozen. No savepoint of
    its own: its errors abort the caller's whole transaction (milestone_freeze keeps one, as
    the webhook catches its IllegalTransition and carries on).
    """
    with transaction.atomic(savepoint=False):
        milestone = milestone_for_update(milestone_id=milestone_id)
        if milestone.status != Status.DISPUTED:
            return milestone
        # Frozen before frozen_from was recorded: the furthest state its timestamps show.
        back_to = milestone.frozen_from or (
            Status.SUBMITTED if milestone.submitted_at else Status.FUNDED
        )
        if back_to not in Milestone.FREEZABLE:
            raise IllegalTransition(
                obj_name=f"Milestone {milestone.pk}", current=milestone.status, target=back_to
            )
        transition(milestone, to=back_to, actor=actor, leaving_dispute=True)
        milestone.frozen_from = ""
        milestone.save(update_fields=["frozen_from"])
        emit_milestone("milestone.unfrozen", milestone, reason=reason[:200])
    return milestone


def milestone_settle_dispute(
    *,
    milestone_id: int,
    release_amount: int,
    actor: User | None = None,
    fee_policy: fees.FeePolicy | None = None,
) -> Milestone:
    """Resolve a disputed milestone: release all (released), nothing (refunded) or part
    (split) of its escrow to the contractor; the fee applies to the released part only, as
    `fee_policy` decides (the caller's: disputes, or billing's; default ESCROW_FEE_POLICY).
    What escrow holds excludes what pending refunds hold (their money is promised).

    Caller: disputes (or an operator). Joins the caller's transaction if any. Idempotent once
    settled (released, refunded or split: returned unchanged). Raises InvalidInput
    (release_amount is not a non-negative integer), IllegalTransition (the milestone is not
    disputed) and InsufficientFunds (more than escrow holds); nothing changes then.
    """
    if type(release_amount) is not int or release_amount < 0:
        raise InvalidInput(
            "release_amount must be a non-negative integer of minor units.",
            field="release_amount",
        )
    with transaction.atomic():
        milestone = milestone_for_update(milestone_id=milestone_id)
        if milestone.status in (Status.RELEASED, Status.REFUNDED, Status.SPLIT):
            return milestone
        if milestone.status != Status.DISPUTED:
            raise IllegalTransition(
                obj_name=f"Milestone {milestone.pk}",
                current=milestone.status,
                target="settled (only a disputed milestone is settled through its dispute)",
            )
        held = milestone.held_amount
        if release_amount > held:
            raise InsufficientFunds(
                f"Milestone {milestone.pk}'s escrow holds {held}; it cannot release "
                f"{release_amount}."
            )
        if release_amount == held:
            to = Status.RELEASED
        elif release_amount == 0:
            to = Status.REFUNDED
        else:
            to = Status.SPLIT
        _settle(
            milestone,
            release_amount=release_amount,
            to=to,
            actor=actor,
            leaving_dispute=True,
            fee_policy=fee_policy,
        )
        milestone.frozen_from = ""
        milestone.save(update_fields=["frozen_from"])
    return milestone
