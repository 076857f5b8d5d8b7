"""The fee a release pays: the seam through which billing (or an operator's settlement)
decides it without escrow importing billing.

A fee policy is a callable `(milestone, release_amount) -> fee`, in the milestone's currency's
minor units. Escrow asks the policy a caller supplies (milestone_settle_dispute's
`fee_policy=`), else the one ESCROW_FEE_POLICY names (a dotted path; by default
`escrow.fees.platform_fee_policy`, PLATFORM_FEE_PERCENT of the released part, rounded half up,
escrow/money.py). Whatever a policy answers is checked here (a whole number of minor units,
0 ≤ fee ≤ release_amount) before anything is posted, so a wrong policy cannot unbalance a
release: fee + payout == release_amount always.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from escrow import money
from escrow.models import Milestone

FeePolicy = Callable[[Milestone, int], int]


def platform_fee_policy(milestone: Milestone, release_amount: int) -> int:
    """The platform's fee: PLATFORM_FEE_PERCENT of the released part (money.platform_fee)."""
    return money.platform_fee(release_amount)


def no_fee(milestone: Milestone, release_amount: int) -> int:
    """No fee (for a settlement an operator decides the platform waives its fee on)."""
    return 0


@cache
def _configured(path: str) -> FeePolicy:
    return import_string(path)


def configured_policy() -> FeePolicy:
    return _configured(settings.ESCROW_FEE_POLICY)


def fee_for(milestone: Milestone, release_amount: int, policy: FeePolicy | None = None) -> int:
    """The fee `policy` (default: the configured one) puts on releasing `release_amount` of
    `milestone`. Raises ValueError when the policy's answer is not a whole number of minor
    units between 0 and the released amount (a programming error: nothing is posted)."""
    fee = (policy or configured_policy())(milestone, release_amount)
    if type(fee) is not int or not 0 <= fee <= release_amount:
        raise ValueError(
            f"fee policy answered {fee!r} for a release of {release_amount}; a fee is a whole "
            "number of minor units between 0 and the released amount"
        )
    return fee
