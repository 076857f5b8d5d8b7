"""The flows of ARCHITECTURE.md: which accounts each money movement debits and credits."""

from escrow.exceptions import InsufficientFunds, UnbalancedEntry
from escrow.ledger.accounts import (
    AccountSpec,
    accounts,
    escrow_spec,
    gateway_spec,
    in_transit_spec,
    payable_spec,
    revenue_spec,
)
from escrow.ledger.entries import Posted, credit, debit
from escrow.ledger.posting import post_entry
from escrow.models import JournalEntry, Milestone


def post_funding(
    *,
    milestone: Milestone,
    amount: int,
    provider: str,
    reference: str,
    found: dict | None = None,
    slot: int | None = None,
) -> Posted:
    """Funding succeeded: Dr gateway:<provider> / Cr escrow:milestone:<id>. `found` and `slot`
    as for accounts() and post_entry() (a batch resolving its accounts in one query); without
    `found`, post_entry() finds or creates the two accounts itself."""
    gateway, escrow = gateway_spec(provider, milestone.project.currency), escrow_spec(milestone)
    if found is not None:
        gateway, escrow = accounts(gateway, escrow, found=found)
    return post_entry(
        slot=slot,
        reference=f"fund:{reference}",
        kind=JournalEntry.Kind.FUND,
        currency=escrow.currency,
        legs=[debit(gateway, amount), credit(escrow, amount)],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
    )


def post_settlement(
    *, milestone: Milestone, release_amount: int, fee: int, kind: str, reference: str
) -> Posted:
    """Move the milestone's whole escrow out in one entry: the released part to the contractor's
    payable (minus the fee, which goes to revenue) and the rest back to the gateway (refund).
    Used for a release (release_amount == escrow), a refund (0) and a split (in between).

    What escrow holds is the milestone's `held_amount` (the caller holds the milestone's lock),
    and the entry must leave the escrow account at exactly zero: if the ledger held anything
    else, nothing is posted (InsufficientFunds). On PostgreSQL that check, the look-ups and the
    entry are one round trip (post_entry with AccountSpecs)."""
    currency = milestone.project.currency
    held = milestone.held_amount
    refund_amount = held - release_amount
    if not 0 <= release_amount <= held or not 0 <= fee <= release_amount:
        raise InsufficientFunds(
            f"Milestone {milestone.pk} holds {held}; cannot release {release_amount}."
        )
    escrow = escrow_spec(milestone)
    legs = [debit(escrow, held)]
    payout = release_amount - fee
    if payout:
        legs.append(credit(payable_spec(milestone.project.contractor_id, currency), payout))
    if fee:
        legs.append(credit(revenue_spec(currency), fee))
    if refund_amount:
        if not milestone.funded_via:
            raise UnbalancedEntry(f"milestone {milestone.pk} holds money but has no gateway")
        legs.append(credit(gateway_spec(milestone.funded_via, currency), refund_amount))
    return post_entry(
        reference=reference,
        kind=kind,
        currency=currency,
        legs=legs,
        milestone=milestone,
        party_id=milestone.project.contractor_id if release_amount else None,
        empties=(escrow,),
    )


def post_payout_started(
    *, payout_reference: str, user_id: int, amount: int, currency: str, provider: str = ""
):
    """A payout to a contractor was sent: Dr payable:user:<id> / Cr payout:in_transit (between
    our own accounts: `provider` is not needed)."""
    return _payout_move(
        f"payout:{payout_reference}",
        JournalEntry.Kind.PAYOUT_STARTED,
        payable_spec(user_id, currency),
        in_transit_spec(currency),
        user_id=user_id,
        amount=amount,
    )


def post_payout_paid(
    *, payout_reference: str, user_id: int, amount: int, currency: str, provider: str
):
    """The gateway paid it: Dr payout:in_transit / Cr gateway:<provider>."""
    return _payout_move(
        f"payout-paid:{payout_reference}",
        JournalEntry.Kind.PAYOUT_PAID,
        in_transit_spec(currency),
        gateway_spec(provider, currency),
        user_id=user_id,
        amount=amount,
    )


def post_payout_failed(
    *, payout_reference: str, user_id: int, amount: int, currency: str, provider: str = ""
):
    """A sent payout failed: the money is owed to the contractor again (in transit → payable;
    `provider` is not needed)."""
    return _payout_move(
        f"payout-failed:{payout_reference}",
        JournalEntry.Kind.PAYOUT_FAILED,
        in_transit_spec(currency),
        payable_spec(user_id, currency),
        user_id=user_id,
        amount=amount,
    )


def post_payout_reversed(
    *, reference: str, user_id: int, amount: int, currency: str, provider: str, memo: str = ""
):
    """The gateway took (part of) a paid payout back: Dr gateway:<provider> / Cr
    payable:user:<id>, owed to the contractor again."""
    return _payout_move(
        reference,
        JournalEntry.Kind.PAYOUT_REVERSED,
        gateway_spec(provider, currency),
        payable_spec(user_id, currency),
        user_id=user_id,
        amount=amount,
        memo=memo,
    )


def _payout_move(
    reference: str,
    kind: str,
    debited: AccountSpec,
    credited: AccountSpec,
    *,
    user_id: int,
    amount: int,
    memo: str = "",
) -> Posted:
    """One step of a payout: Dr `debited` / Cr `credited`, the contractor as the party."""
    return post_entry(
        reference=reference,
        kind=kind,
        currency=debited.currency,
        legs=[debit(debited, amount), credit(credited, amount)],
        party_id=user_id,
        memo=memo,
    )
