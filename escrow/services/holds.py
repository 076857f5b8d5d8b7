"""Money promised to refunds the gateway has not confirmed yet: the refund hold rule.

The one rule, in one place: a refund that is not escrow's own settlement (an operator's
partial refund) reserves its amount in the ledger when it is created, under the milestone's
lock: Dr escrow:milestone:<id> / Cr hold:refund:<reference> ("refund-hold:<reference>"), and
the milestone's `refund_holds` grows by it. From then on `held_amount` (what a release, a
milestone refund or a dispute settlement moves) leaves it out, and so does what the next
refund may take, so two refund paths that meet on the milestone's lock size themselves from
what escrow still holds. When the gateway confirms, the refund settles out of its hold
(Dr hold / Cr gateway, "refund:<reference>"); when it fails, the hold goes back to escrow
(Dr hold / Cr escrow, "refund-hold-returned:<reference>"). Both leave the hold at exactly
zero; the references make each step happen once. check_ledger proves that each milestone's
`refund_holds` is what its hold accounts hold and that every hold belongs to a pending
refund of the same amount (escrow.invariants, payments.invariants).
"""

import logging

from django.db import transaction

from escrow import ledger
from escrow.exceptions import IllegalTransition, InsufficientFunds
from escrow.locks import milestone_for_update
from escrow.models import JournalEntry, Milestone
from escrow.services._events import emit_balance_changed, emit_milestone, project_escrow_balance
from escrow.services.milestones import transition
from escrow.services.projects import complete_if_settled

logger = logging.getLogger(__name__)
Status = Milestone.Status
SETTLED = frozenset({Status.RELEASED, Status.REFUNDED, Status.SPLIT})


def _hold_reference(reference: str) -> str:
    return f"refund-hold:{reference}"


def _held_for(reference: str) -> int | None:
    """What the hold of refund `reference` was given, or None when it has none (a refund
    created before holds existed: its money is still in escrow)."""
    return (
        JournalEntry.objects.filter(reference=_hold_reference(reference))
        .values_list("amount", flat=True)
        .first()
    )


def milestone_refund_hold(milestone: Milestone, *, amount: int, reference: str) -> None:
    """Reserve `amount` of the milestone's escrow for a refund about to be sent to the gateway.

    Caller: payments, creating an operator's refund, inside its transaction and holding the
    milestone's lock (escrow.locks.milestone_for_update, which payments.locks takes first).
    Raises IllegalTransition (the milestone is frozen by a dispute, holds nothing, or is in
    inspection and the refund would take all it holds: an inspection cannot become refunded)
    and InsufficientFunds (more than escrow holds beyond what other refunds already hold).
    Nothing is written then. Idempotent on `reference`. Emits escrow.balance_changed.
    """
    assert transaction.get_connection().in_atomic_block, "the caller holds the milestone's lock"
    status = milestone.status
    if status == Status.DISPUTED:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}",
            current=status,
            target="refunded (its escrow is frozen until the dispute is settled)",
        )
    if status in Milestone.HOLDING:
        free = milestone.held_amount
    elif status in SETTLED:
        # Only what a failed refund gave back after the settlement (one indexed read).
        free = ledger.escrow_balance_of(milestone.pk)
    else:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}", current=status, target="refunded"
        )
    if type(amount) is not int or not 0 < amount <= free:
        raise InsufficientFunds(
            f"Milestone {milestone.pk}'s escrow holds {free} that no pending refund has "
            f"claimed; it cannot refund {amount}."
        )
    emptied = status in Milestone.HOLDING and amount == free
    if emptied and Status.REFUNDED not in Milestone.TRANSITIONS[status]:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}", current=status, target="refunded"
        )
    previous_balance = project_escrow_balance(milestone.project_id)
    posted = ledger.post_entry(
        reference=_hold_reference(reference),
        kind=JournalEntry.Kind.REFUND_HOLD,
        currency=milestone.project.currency,
        legs=[
            ledger.debit(ledger.escrow_spec(milestone), amount),
            ledger.credit(ledger.hold_spec(milestone, reference), amount),
        ],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
        memo=f"held for pending refund {reference}",
    )
    if not posted.created:
        return
    milestone.refund_holds += amount
    milestone.save(update_fields=["refund_holds", "updated_at"])
    emit_balance_changed(
        milestone, previous_project_balance=previous_balance, reason="refund_pending"
    )


def milestone_refund_partial(
    *, milestone_id: int, amount: int, reference: str, provider: str
) -> Milestone:
    """The gateway confirmed a refund of part of the funding: settle it out of its hold.

    Caller: payments, inside its transaction, when an operator's refund is confirmed (the
    gateway call already happened, so no reaction fires and nothing here refuses because of the
    milestone's status: the money is gone, the ledger must say so). Posts "refund:<reference>"
    Dr hold:refund:<reference> / Cr gateway:<provider>, emptying the hold; the milestone then
    counts it in `partial_refunds`. When nothing is left in escrow or in holds, a milestone
    that may become refunded does. Idempotent on `reference`. Raises InsufficientFunds when
    the hold was given another amount (a programming error; nothing is written).

    A refund created before holds existed has none; it settles out of escrow as it used to
    (then the milestone must still hold it: IllegalTransition, InsufficientFunds).
    """
    milestone = milestone_for_update(milestone_id=milestone_id)
    currency = milestone.project.currency
    held_for_it = _held_for(reference)
    if held_for_it is None:
        source, empties = _legacy_source(milestone, amount), ()
    elif held_for_it != amount:
        raise InsufficientFunds(
            f"Refund {reference} holds {held_for_it}; it cannot settle {amount}."
        )
    else:
        source = ledger.hold_spec(milestone, reference)
        empties = (source,)
    previous_balance = project_escrow_balance(milestone.project_id)
    posted = ledger.post_entry(
        reference=f"refund:{reference}",
        kind=JournalEntry.Kind.REFUND,
        currency=currency,
        legs=[
            ledger.debit(source, amount),
            ledger.credit(ledger.gateway_spec(provider, currency), amount),
        ],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
        memo=f"partial refund {reference}",
        empties=empties,
    )
    if not posted.created:
        return milestone
    milestone.partial_refunds += amount
    if held_for_it is not None:
        milestone.refund_holds -= amount
    milestone.save(update_fields=["partial_refunds", "refund_holds", "updated_at"])
    if (
        milestone.status in Milestone.HOLDING
        and milestone.status != Status.DISPUTED
        and milestone.held_amount == 0
        and milestone.refund_holds == 0
    ):
        if Status.REFUNDED in Milestone.TRANSITIONS[milestone.status]:
            transition(milestone, to=Status.REFUNDED, actor=None)
            complete_if_settled(milestone.project)
        else:
            logger.warning(
                "milestone refunded in full but its status cannot become refunded",
                extra={"milestone_id": milestone.pk, "status": milestone.status},
            )
    emit_milestone("milestone.refunded", milestone, refunded_amount=amount, partial=True)
    if held_for_it is None:
        emit_balance_changed(
            milestone, previous_project_balance=previous_balance, reason="partial_refund"
        )
    return milestone


def _legacy_source(milestone: Milestone, amount: int) -> ledger.AccountSpec:
    if milestone.status not in Milestone.HOLDING:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}", current=milestone.status, target="refunded"
        )
    if type(amount) is not int or not 0 < amount <= milestone.held_amount:
        raise InsufficientFunds(
            f"Milestone {milestone.pk} holds {milestone.held_amount}; cannot refund {amount}."
        )
    return ledger.escrow_spec(milestone)


def milestone_refund_hold_return(*, milestone_id: int, reference: str) -> Milestone:
    """The gateway failed a refund: its hold goes back to the milestone's escrow, where a
    release, a settlement or another refund can move it again (after a settlement, it stays
    in escrow for an operator's next refund).

    Caller: payments, inside its transaction, when a refund fails for good; joins it and
    takes the milestone's lock. Posts "refund-hold-returned:<reference>" Dr hold / Cr escrow,
    emptying the hold. Idempotent on `reference`; a refund without a hold changes nothing.
    Emits escrow.balance_changed.
    """
    milestone = milestone_for_update(milestone_id=milestone_id)
    amount = _held_for(reference)
    if amount is None:
        return milestone
    hold = ledger.hold_spec(milestone, reference)
    previous_balance = project_escrow_balance(milestone.project_id)
    posted = ledger.post_entry(
        reference=f"refund-hold-returned:{reference}",
        kind=JournalEntry.Kind.REFUND_HOLD_RETURNED,
        currency=milestone.project.currency,
        legs=[ledger.debit(hold, amount), ledger.credit(ledger.escrow_spec(milestone), amount)],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
        memo=f"refund {reference} failed; back in escrow",
        empties=(hold,),
    )
    if not posted.created:
        return milestone
    milestone.refund_holds -= amount
    milestone.save(update_fields=["refund_holds", "updated_at"])
    emit_balance_changed(
        milestone, previous_project_balance=previous_balance, reason="refund_failed"
    )
    return milestone
