"""Funding a milestone, as payments asks for it: pending → funding when the homeowner starts
paying, funding → funded (Dr gateway / Cr escrow) when the payment completes, back to pending
when it fails.

The success is split the way every batched path here is: `milestone_funded_check` decides,
on a milestone the caller holds locked, whether this funding applies (raising what is wrong
with it); `milestone_funded_locked` does it. `milestone_funded` is the two for one milestone;
`FundingBatch` is the two for a worker's batch of payment successes: it reads what the checks
and the ledger need once for the batch, then calls the same `milestone_funded_locked` per
milestone, whose row saves it collects for the caller's one UPDATE (common.bulk.Saves).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from django.conf import settings

from escrow import ledger
from escrow.actions import require
from escrow.exceptions import FundingMismatch, IllegalTransition, ProjectNotActive
from escrow.locks import milestone_for_update
from escrow.models import JournalEntry, Milestone, Project
from escrow.services._events import emit_balance_changed, emit_milestone, project_escrow_balance
from escrow.services.milestones import transition

if TYPE_CHECKING:
    from accounts.models import User
    from common.bulk import Saves

Status = Milestone.Status


def milestone_fund_start(*, milestone_id: int, actor: User) -> Milestone:
    """pending → funding, when the homeowner starts paying.

    Caller: payments, inside the transaction that creates the funding payment (so the caller
    holds the transaction; this joins it). Raises MilestoneNotFound, NotAllowed,
    ProjectNotActive and IllegalTransition (not pending: already funding or funded).
    """
    milestone = milestone_for_update(milestone_id=milestone_id, actor=actor)
    require(actor, milestone, "fund")
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
    if milestone_funded_check(milestone, amount=amount, currency=currency, reference=reference):
        milestone_funded_locked(milestone, amount=amount, reference=reference, provider=provider)
    return milestone


def milestone_funded_check(
    milestone: Milestone,
    *,
    amount: int,
    currency: str,
    reference: str,
    posted_elsewhere: bool | None = None,
) -> bool:
    """Whether the funding `reference` (amount, currency) applies to a milestone the caller
    holds locked: False when it already did (the same funding twice), True when
    milestone_funded_locked should apply it. Raises FundingMismatch (amount or currency
    differ; the reference was posted for another milestone) and IllegalTransition (the
    milestone is neither pending nor funding). `posted_elsewhere`: whether a funding entry
    with this reference exists for another milestone, when the caller looked it up already
    (a batch, in one query); else it is looked up here."""
    if amount != milestone.amount or currency != milestone.project.currency:
        raise FundingMismatch(
            f"Milestone {milestone.pk} needs {milestone.amount} {milestone.project.currency}, "
            f"got {amount} {currency}."
        )
    if milestone.funding_reference == reference:
        return False
    if posted_elsewhere is None:
        posted_elsewhere = (
            JournalEntry.objects.filter(reference=f"fund:{reference}")
            .exclude(milestone_id=milestone.pk)
            .exists()
        )
    # A reference names one payment; posted for another milestone it would be taken as
    # "already posted" and this milestone would be marked funded with nothing in escrow.
    if posted_elsewhere:
        raise FundingMismatch(f"Funding {reference} was already posted for another milestone.")
    if milestone.status not in (Status.PENDING, Status.FUNDING):
        raise IllegalTransition(
            obj_name=f"Milestone {milestone.pk}", current=milestone.status, target=Status.FUNDED
        )
    return True


def milestone_funded_locked(
    milestone: Milestone,
    *,
    amount: int,
    reference: str,
    provider: str,
    batch: FundingBatch | None = None,
) -> Milestone:
    """Apply a funding milestone_funded_check accepted, to a milestone the caller holds
    locked: (pending →) funding → funded with the provider and reference, Dr gateway / Cr
    escrow, then milestone.status_updated, milestone.funded and escrow.balance_changed.
    `batch`: the FundingBatch whose reads (accounts, balances) and row saves it uses."""
    if milestone.status == Status.PENDING:
        transition(milestone, to=Status.FUNDING, actor=None)
    if batch is None:
        previous_balance = project_escrow_balance(milestone.project_id)
    else:
        previous_balance = batch.project_balance[milestone.project_id]
    transition(
        milestone,
        to=Status.FUNDED,
        actor=None,
        changes={"funded_via": provider, "funding_reference": reference},
        saves=batch.saves if batch else None,
    )
    ledger.post_funding(
        milestone=milestone,
        amount=amount,
        provider=provider,
        reference=reference,
        found=batch.found if batch else None,
        slot=batch.slot if batch else None,
    )
    emit_milestone("milestone.funded", milestone, funding_reference=reference)
    if batch is None:
        emit_balance_changed(milestone, previous_project_balance=previous_balance, reason="funded")
    else:
        spec = ledger.escrow_spec(milestone)
        batch.project_balance[milestone.project_id] += amount
        emit_balance_changed(
            milestone,
            previous_project_balance=previous_balance,
            new_project_balance=batch.project_balance[milestone.project_id],
            milestone_balance=batch.found[(spec.code, spec.currency)].balance + amount,
            reason="funded",
        )
    return milestone


class FundingBatch:
    """milestone_funded for many milestones in one transaction, for a worker applying a batch
    of payment successes: the same check and action per milestone, with the reads done once
    for the batch and the milestone rows saved in the caller's one UPDATE (`saves`).

    Only the plain case is taken: a milestone in `funding` that milestone_funded_check
    accepts. `prepare()` says which of the offered ones qualify; the caller sends the rest
    through milestone_funded one by one (a late success after a reset to pending, a mismatch
    to log, an idempotent repeat).

    Caller: payments, inside its transaction, holding the milestones from
    escrow.locks.milestones_for_update. Use: prepare(), fund() for each, then `saves.flush()`.
    """

    def __init__(self, milestones: dict[int, Milestone], *, saves: Saves) -> None:
        self.milestones = milestones
        self.saves = saves
        self.offers: dict[int, tuple[int, str, str, str]] = {}
        self.project_balance: dict[int, int] = {}
        self.found: dict = {}
        # One balance slot for the batch's shared accounts (see ledger.post_entry).
        self.slot = random.randrange(settings.LEDGER_BALANCE_SLOTS)

    def prepare(self, offers: dict[int, tuple[int, str, str, str]]) -> set[int]:
        """`offers`: milestone id → (amount, currency, reference, provider). Returns the ids that
        fund() may take. Two queries for the checks and the balances, two for the accounts."""
        offered = {
            milestone_id: offer
            for milestone_id, offer in offers.items()
            if milestone_id in self.milestones
            and self.milestones[milestone_id].status == Status.FUNDING
        }
        posted = set(
            JournalEntry.objects.filter(
                reference__in=[f"fund:{offer[2]}" for offer in offered.values()]
            ).values_list("reference", flat=True)
        )
        self.offers = {}
        for milestone_id, (amount, currency, reference, provider) in offered.items():
            try:
                applies = milestone_funded_check(
                    self.milestones[milestone_id],
                    amount=amount,
                    currency=currency,
                    reference=reference,
                    posted_elsewhere=f"fund:{reference}" in posted,
                )
            except (FundingMismatch, IllegalTransition):
                continue  # the one-by-one path raises it where it is logged
            if applies:
                self.offers[milestone_id] = (amount, currency, reference, provider)
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
        """milestone_funded_locked for one prepared milestone."""
        amount, _currency, reference, provider = self.offers.pop(milestone_id)
        return milestone_funded_locked(
            self.milestones[milestone_id],
            amount=amount,
            reference=reference,
            provider=provider,
            batch=self,
        )


def milestone_funding_failed(*, milestone_id: int) -> Milestone:
    """funding → pending when the payment failed, so the homeowner can try again.

    Caller: payments, inside its transaction. Idempotent: a pending milestone is returned as is.
    Any other state is left alone (a stale failure never overrides a newer state).
    """
    milestone = milestone_for_update(milestone_id=milestone_id)
    if milestone.status == Status.FUNDING:
        transition(milestone, to=Status.PENDING, actor=None)
    return milestone
