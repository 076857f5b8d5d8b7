"""Writes to milestones: every status change and the ledger entries that go with it.

Each entry point takes the locks in the documented order (project → milestone → ledger
accounts), reads the status from the locked row, checks it against Milestone.TRANSITIONS,
posts the ledger, emits events and registers after-commit work, all in one transaction.
"""

import random

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from common.bulk import update_rows
from escrow import hooks, ledger, money
from escrow.exceptions import (
    FundingMismatch,
    IllegalTransition,
    InsufficientFunds,
    InvalidInput,
    NotAllowed,
    ProjectNotActive,
)
from escrow.locks import milestone_for_update
from escrow.models import JournalEntry, Milestone, Project
from escrow.services._events import (
    emit_balance_changed,
    emit_milestone,
    emit_status_updated,
    project_escrow_balance,
)
from escrow.services.projects import complete_if_settled

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
    milestone: Milestone, *, to: str, actor: User | None, leaving_dispute: bool = False
) -> str:
    """Move a locked milestone to `to` if the table allows it; emit milestone.status_updated.
    Caller holds the milestone's lock. Returns the previous status.

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
    if to not in Milestone.TRANSITIONS[previous]:
        raise IllegalTransition(obj_name=f"Milestone {milestone.pk}", current=previous, target=to)
    milestone.status = to
    now = timezone.now()
    update_fields = ["status", "updated_at"]
    if to in _TIMESTAMPS:
        setattr(milestone, _TIMESTAMPS[to], now)
        update_fields.append(_TIMESTAMPS[to])
    if to == Status.SUBMITTED:
        milestone.review_deadline = now + settings.MILESTONE_REVIEW_WINDOW
        update_fields.append("review_deadline")
    milestone.save(update_fields=update_fields)
    emit_status_updated(milestone, previous=previous, actor_id=actor.pk if actor else None)
    return previous


def _require(actor: User | None, milestone: Milestone, *roles: str) -> None:
    """Check the actor's part in the project: "homeowner", "contractor" or "operator"."""
    if actor is None:
        return  # a system caller (payments, beat); it has no part to check
    project = milestone.project
    allowed = (
        ("homeowner" in roles and actor.pk == project.homeowner_id)
        or ("contractor" in roles and actor.pk == project.contractor_id)
        or ("operator" in roles and actor.is_staff)
    )
    if not allowed:
        raise NotAllowed(f"Only the project's {' or '.join(roles)} may do this.")


def _already(milestone: Milestone, *states: str) -> bool:
    return milestone.status in states


# --- Funding (called by payments) -------------------------------------------------------------


def milestone_fund_start(*, milestone_id: int, actor: User) -> Milestone:
    """pending → funding, when the homeowner starts paying.

    Caller: payments, inside the transaction that creates the funding payment (so the caller
    holds the transaction; this joins it). Raises MilestoneNotFound, NotAllowed,
    ProjectNotActive and IllegalTransition (not pending: already funding or funded).
    """
    milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
    _require(actor, milestone, "homeowner")
    if milestone.project.status != Project.Status.ACTIVE:
        raise ProjectNotActive(
            f"Project {milestone.project_id} is {milestone.project.status}; "
            "both parties must sign before funding."
        )
    transition(milestone, to=Status.FUNDING, actor=actor)
    return milestone


def milestone_funded(
    *, milestone_id: int, amount: int, currency: str, reference: str, provider: str
) -> Milestone:
    """The funding payment completed: funding → funded, Dr gateway / Cr escrow.

    Caller: payments, inside its transaction, holding the payment's lock. A late success for a
    milestone that went back to pending passes through funding. Idempotent on `reference`:
    the same funding twice posts once. Raises FundingMismatch (amount or currency differ) and
    IllegalTransition (the milestone was cancelled or funded by another payment).
    """
    milestone = milestone_for_update(milestone_id=milestone_id)
    if amount != milestone.amount or currency != milestone.project.currency:
        raise FundingMismatch(
            f"Milestone {milestone.pk} needs {milestone.amount} {milestone.project.currency}, "
            f"got {amount} {currency}."
        )
    if milestone.funding_reference == reference:
        return milestone
    # A reference names one payment; posted for another milestone it would be taken as
    # "already posted" and this milestone would be marked funded with nothing in escrow.
    if (
        JournalEntry.objects.filter(reference=f"fund:{reference}")
        .exclude(milestone_id=milestone.pk)
        .exists()
    ):
        raise FundingMismatch(f"Funding {reference} was already posted for another milestone.")
    if milestone.status == Status.PENDING:
        transition(milestone, to=Status.FUNDING, actor=None)
    previous_balance = project_escrow_balance(milestone.project_id)
    transition(milestone, to=Status.FUNDED, actor=None)
    milestone.funded_via = provider
    milestone.funding_reference = reference
    milestone.save(update_fields=["funded_via", "funding_reference"])
    ledger.post_funding(milestone=milestone, amount=amount, provider=provider, reference=reference)
    emit_milestone("milestone.funded", milestone, funding_reference=reference)
    emit_balance_changed(milestone, previous_project_balance=previous_balance, reason="funded")
    return milestone


class FundingBatch:
    """Many milestone_funded calls in one transaction, for a worker applying a batch of payment
    successes: the same checks, ledger entries and events, in the same order, with the reads
    and the milestone UPDATEs done once for the batch instead of once per milestone.

    Only the plain case is taken: a milestone in `funding`, the amount and currency it asks
    for, a funding reference posted nowhere yet. `prepare()` says which of the offered ones
    qualify; the caller sends the rest through milestone_funded one by one (a late success
    after a reset to pending, a mismatch to log, an idempotent repeat).

    Caller: payments, inside its transaction, holding the milestones from
    escrow.locks.milestones_for_update. Use: prepare(), fund() for each, finish() once."""

    def __init__(self, milestones: dict[int, Milestone]) -> None:
        self.milestones = milestones
        self.offers: dict[int, tuple[int, str, str, str]] = {}
        self.dirty: list[Milestone] = []
        self.now = timezone.now()
        # One balance slot for the batch's shared accounts (see ledger.post_entry).
        self.slot = random.randrange(settings.LEDGER_BALANCE_SLOTS)

    def prepare(self, offers: dict[int, tuple[int, str, str, str]]) -> set[int]:
        """`offers`: milestone id → (amount, currency, reference, provider). Returns the ids that
        fund() may take. Two queries for the checks and the balances, two for the accounts."""
        candidates = {}
        for milestone_id, (amount, currency, reference, provider) in offers.items():
            milestone = self.milestones.get(milestone_id)
            if (
                milestone is not None
                and milestone.status == Status.FUNDING
                and Status.FUNDED in Milestone.TRANSITIONS[milestone.status]
                and amount == milestone.amount
                and currency == milestone.project.currency
                and milestone.funding_reference != reference
            ):
                candidates[milestone_id] = (amount, currency, reference, provider)
        posted = set(
            JournalEntry.objects.filter(
                reference__in=[f"fund:{offer[2]}" for offer in candidates.values()]
            ).values_list("reference", flat=True)
        )
        self.offers = {
            milestone_id: offer
            for milestone_id, offer in candidates.items()
            if f"fund:{offer[2]}" not in posted
        }
        if not self.offers:
            return set()
        fundable = [self.milestones[milestone_id] for milestone_id in self.offers]
        self.project_balance = ledger.project_escrow_balances(
            {milestone.project_id for milestone in fundable}
        )
        specs = []
        for milestone in fundable:
            specs += [
                ledger.gateway_spec(self.offers[milestone.pk][3], milestone.project.currency),
                ledger.escrow_spec(milestone),
            ]
        self.found = {
            (account.code, account.currency): account for account in ledger.accounts(*specs)
        }
        return set(self.offers)

    def fund(self, milestone_id: int) -> Milestone:
        """What milestone_funded does for one prepared milestone, with its UPDATE left for
        finish(): funding → funded, Dr gateway / Cr escrow, the same three events."""
        amount, _currency, reference, provider = self.offers.pop(milestone_id)
        milestone = self.milestones[milestone_id]
        previous_balance = self.project_balance[milestone.project_id]
        spec = ledger.escrow_spec(milestone)
        escrow = self.found[(spec.code, spec.currency)]
        milestone.status = Status.FUNDED
        milestone.funded_at = milestone.updated_at = self.now
        emit_status_updated(milestone, previous=Status.FUNDING, actor_id=None)
        milestone.funded_via = provider
        milestone.funding_reference = reference
        ledger.post_funding(
            milestone=milestone,
            amount=amount,
            provider=provider,
            reference=reference,
            found=self.found,
            slot=self.slot,
        )
        emit_milestone("milestone.funded", milestone, funding_reference=reference)
        self.project_balance[milestone.project_id] += amount
        emit_balance_changed(
            milestone,
            previous_project_balance=previous_balance,
            new_project_balance=self.project_balance[milestone.project_id],
            milestone_balance=escrow.balance + amount,
            reason="funded",
        )
        self.dirty.append(milestone)
        return milestone

    def finish(self) -> None:
        if self.dirty:
            now = self.dirty[0].funded_at
            update_rows(
                Milestone,
                same={"status": Status.FUNDED, "funded_at": now, "updated_at": now},
                per_row={
                    milestone.pk: {
                        "funded_via": milestone.funded_via,
                        "funding_reference": milestone.funding_reference,
                    }
                    for milestone in self.dirty
                },
            )
        self.dirty = []


def milestone_funding_failed(*, milestone_id: int) -> Milestone:
    """funding → pending when the payment failed, so the homeowner can try again.

    Caller: payments, inside its transaction. Idempotent: a pending milestone is returned as is.
    Any other state is left alone (a stale failure never overrides a newer state).
    """
    milestone = milestone_for_update(milestone_id=milestone_id)
    if milestone.status == Status.FUNDING:
        transition(milestone, to=Status.PENDING, actor=None)
    return milestone


# --- The work ---------------------------------------------------------------------------------


def milestone_submit(*, milestone_id: int, actor: User) -> Milestone:
    """The contractor says the work is done: funded → submitted; the review window starts.

    Idempotent. Raises MilestoneNotFound, NotAllowed (not the contractor), IllegalTransition.
    Emits milestone.status_updated.
    """
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        _require(actor, milestone, "contractor")
        if not _already(milestone, Status.SUBMITTED):
            transition(milestone, to=Status.SUBMITTED, actor=actor)
    return milestone


def milestone_request_inspection(*, milestone_id: int, actor: User) -> Milestone:
    """The homeowner asks for an inspection before approving: submitted → inspection.
    Stops the auto-release clock. Idempotent. Raises as milestone_submit."""
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        _require(actor, milestone, "homeowner")
        if not _already(milestone, Status.INSPECTION):
            transition(milestone, to=Status.INSPECTION, actor=actor)
    return milestone


def milestone_approve(*, milestone_id: int, actor: User | None) -> Milestone:
    """Approve a submitted (or inspected) milestone and release its escrow.

    Caller: the homeowner, or None for the auto-release after the review window. Idempotent:
    approving a released milestone returns it. Raises MilestoneNotFound, NotAllowed,
    IllegalTransition. Posts Dr escrow / Cr contractor payable (amount − fee) / Cr revenue
    (fee); emits milestone.status_updated (×2), milestone.released, escrow.balance_changed;
    the payout starts after commit (hook "milestone.released").
    """
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        _require(actor, milestone, "homeowner")
        if _already(milestone, Status.RELEASED):
            return milestone
        transition(milestone, to=Status.APPROVED, actor=actor)
        _settle(milestone, release_amount=milestone.held_amount, to=Status.RELEASED, actor=actor)
    return milestone


def milestone_refund(*, milestone_id: int, actor: User) -> Milestone:
    """Give the escrow back to the homeowner: funded|submitted → refunded.

    Caller: the homeowner before the contractor submits, or an operator (also after submit).
    Idempotent. Raises MilestoneNotFound, NotAllowed, IllegalTransition. Posts Dr escrow /
    Cr gateway; the gateway refund runs after commit (hook "milestone.refunded").
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
    _require(actor, milestone, "homeowner", "operator")
    if _already(milestone, Status.REFUNDED):
        return milestone
    if not actor.is_staff and milestone.status != Status.FUNDED:
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}",
            current=milestone.status,
            target=f"{Status.REFUNDED} (by the homeowner, only before submission)",
        )
    _settle(milestone, release_amount=0, to=Status.REFUNDED, actor=actor)
    return milestone


def milestone_cancel(*, milestone_id: int, actor: User) -> Milestone:
    """Drop a milestone nobody has paid for: pending → cancelled. Homeowner or operator.
    Idempotent. Raises MilestoneNotFound, NotAllowed, IllegalTransition."""
    with transaction.atomic(durable=True):
        milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
        _require(actor, milestone, "homeowner", "operator")
        if not _already(milestone, Status.CANCELLED):
            transition(milestone, to=Status.CANCELLED, actor=actor)
            complete_if_settled(milestone.project)
    return milestone


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
    *, milestone_id: int, release_amount: int, actor: User | None = None
) -> Milestone:
    """Resolve a disputed milestone: release all (released), nothing (refunded) or part
    (split) of its escrow to the contractor; the fee applies to the released part only.
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
        _settle(milestone, release_amount=release_amount, to=to, actor=actor, leaving_dispute=True)
        milestone.frozen_from = ""
        milestone.save(update_fields=["frozen_from"])
    return milestone


def _settle(
    milestone: Milestone,
    *,
    release_amount: int,
    to: str,
    actor: User | None,
    leaving_dispute: bool = False,
) -> None:
    """Move the whole escrow out in one entry and fire the after-commit hooks. Caller holds the
    milestone's lock inside its transaction. The escrow is `held_amount`: what pending refunds
    hold stays in their holds (escrow/services/holds.py). Raises InsufficientFunds when
    pending refunds hold all of it (there is nothing to settle until they end)."""
    if milestone.held_amount == 0:
        raise InsufficientFunds(
            f"Milestone {milestone.pk}'s escrow is all promised to pending refunds "
            f"({milestone.refund_holds}); nothing is left to settle until they end."
        )
    previous_balance = project_escrow_balance(milestone.project_id)
    fee = money.platform_fee(release_amount)
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
        hooks.fire_on_commit("milestone.released", milestone_id=milestone.pk)
    if refund_amount:
        emit_milestone("milestone.refunded", milestone, refunded_amount=refund_amount)
        hooks.fire_on_commit("milestone.refunded", milestone_id=milestone.pk)
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
