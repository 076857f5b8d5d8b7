"""After-commit reactions: how escrow and payments tell the apps above them what happened,
without importing them. Every reaction is listed here, with the payload it carries:

    milestone_settled(Settlement)       escrow: a release, refund or split moved a milestone's
                                        escrow out (payments starts the payout and/or the
                                        gateway refund; billing may invoice the fee)
    payment_completed(PaymentCompleted) payments: the gateway took a payment's money
    charge_disputed(ChargeDisputed)     payments: a card holder disputed a charge (the
                                        milestone is frozen; disputes opens its case)
    charge_dispute_closed(ChargeDisputeClosed)
                                        payments: the gateway closed a charge dispute

An app registers its handlers in its AppConfig.ready(), e.g. payments:
    reactions.milestone_settled.register(_start_settlement_work)
The owner fires a reaction inside its transaction (`reaction.fire(payload)`); each handler runs
only if that transaction commits, after it, with the payload. A crash between the commit and a
handler loses the call, so work that must happen is also swept for by its owner (payments'
settlements_sweep finds settled milestones with no payout or refund). Handlers must be quick
(enqueue a task) and idempotent; one that raises is logged and does not stop the others.
This is a typed registry of four names, not Django signals: a payload of the wrong type, or
a name not listed here, is a programming error raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

from django.db import transaction

logger = logging.getLogger(__name__)

P = TypeVar("P")


@dataclass(frozen=True)
class Settlement:
    """A milestone's escrow moved out: `released_amount` to the contractor (less `fee`, which
    the fee policy decided), `refunded_amount` back to the homeowner; `status` is released,
    refunded or split. Amounts in minor units of `currency`."""

    milestone_id: int
    project_id: int
    status: str
    currency: str
    released_amount: int
    fee: int
    refunded_amount: int


@dataclass(frozen=True)
class PaymentCompleted:
    payment_id: int
    milestone_id: int | None
    purpose: str
    amount: int
    currency: str


@dataclass(frozen=True)
class ChargeDisputed:
    payment_id: int
    milestone_id: int | None
    dispute_id: str
    reason: str
    frozen: bool  # whether the milestone's escrow is now frozen


@dataclass(frozen=True)
class ChargeDisputeClosed:
    payment_id: int
    milestone_id: int | None
    dispute_id: str
    status: str  # the gateway's: won, lost, warning_closed, ...
    unfrozen: bool


class Reaction(Generic[P]):
    """One named after-commit reaction with a payload of `payload_type`."""

    def __init__(self, name: str, payload_type: type[P]) -> None:
        self.name = name
        self.payload_type = payload_type
        self.handlers: list[Callable[[P], None]] = []

    def __repr__(self) -> str:
        return f"<Reaction {self.name}({self.payload_type.__name__})>"

    def register(self, handler: Callable[[P], None]) -> None:
        if handler not in self.handlers:
            self.handlers.append(handler)

    def unregister(self, handler: Callable[[P], None]) -> None:
        if handler in self.handlers:
            self.handlers.remove(handler)

    def fire(self, payload: P) -> None:
        """Run every handler with `payload` after the current transaction commits."""
        if not isinstance(payload, self.payload_type):
            raise TypeError(f"{self.name} carries {self.payload_type.__name__}, not {payload!r}")
        for handler in list(self.handlers):
            transaction.on_commit(lambda handler=handler: self._run(handler, payload))

    def _run(self, handler: Callable[[P], None], payload: P) -> None:
        try:
            handler(payload)
        except Exception:
            # The change is committed; the owner's sweep picks the work up later.
            logger.exception("reaction failed", extra={"reaction": self.name, **asdict(payload)})


milestone_settled: Reaction[Settlement] = Reaction("milestone_settled", Settlement)
payment_completed: Reaction[PaymentCompleted] = Reaction("payment_completed", PaymentCompleted)
charge_disputed: Reaction[ChargeDisputed] = Reaction("charge_disputed", ChargeDisputed)
charge_dispute_closed: Reaction[ChargeDisputeClosed] = Reaction(
    "charge_dispute_closed", ChargeDisputeClosed
)

REACTIONS = (milestone_settled, payment_completed, charge_disputed, charge_dispute_closed)
