"""What escrow's ledger records while payments carries money owed to a user out at the
gateway: a payout sent (Dr payable:user:<id> / Cr payout:in_transit), paid (in transit →
gateway), failed (in transit → payable: owed again) or reversed by the gateway after it was
paid (gateway → payable, per step of the cumulative reversed amount).

Caller: payments, inside its transaction, holding the payout's lock; each posting is
idempotent on its reference (the payout's id, and for a reversal the cumulative amount), so
a repeated webhook posts nothing twice. payments decides when (the payout's state machine);
escrow decides what the ledger says.
"""

from __future__ import annotations

from dataclasses import dataclass

from escrow import ledger


@dataclass(frozen=True)
class PayableTransfer:
    """One transfer of money owed to a user: `reference` is the payout's id."""

    reference: str
    user_id: int
    amount: int
    currency: str
    provider: str

    def ledger_args(self) -> dict:
        return {
            "payout_reference": self.reference,
            "user_id": self.user_id,
            "amount": self.amount,
            "currency": self.currency,
            "provider": self.provider,
        }


def payable_transfer_started(transfer: PayableTransfer) -> None:
    ledger.post_payout_started(**transfer.ledger_args())


def payable_transfer_paid(transfer: PayableTransfer) -> None:
    ledger.post_payout_paid(**transfer.ledger_args())


def payable_transfer_failed(transfer: PayableTransfer) -> None:
    ledger.post_payout_failed(**transfer.ledger_args())


# One ledger entry per step of the cumulative reversed amount: it only grows, so each step has
# its own reference, and a repeated step (a webhook delivered twice, or the same amount seen by
# reconciliation) is refused by the unique reference even if the payout's own check were
# bypassed.
REVERSAL_PREFIX = "payout-reversal:"


def reversal_reference(reference: str, amount_reversed: int) -> str:
    return f"{REVERSAL_PREFIX}{reference}:{amount_reversed}"


def payable_transfer_reversed(
    transfer: PayableTransfer, *, step: int, amount_reversed: int, memo: str
) -> None:
    """The gateway took `step` more of a paid transfer back (`amount_reversed` in all so far):
    owed to the user again."""
    ledger.post_payout_reversed(
        reference=reversal_reference(transfer.reference, amount_reversed),
        user_id=transfer.user_id,
        amount=step,
        currency=transfer.currency,
        provider=transfer.provider,
        memo=memo,
    )
