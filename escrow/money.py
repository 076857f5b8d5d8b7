"""The one rounding rule for fees, and the largest amount we accept.

Amounts are integers in the currency's minor unit; currencies and their display are in
common.money (a zero-decimal currency simply has exponent 0, so no arithmetic here ever looks
at the exponent).
"""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

# Re-exported: escrow's callers name currencies through escrow.money as before.
from common.money import (  # noqa: F401
    CURRENCY_EXPONENTS,
    ZERO_DECIMAL,
    exponent,
    format_amount,
    is_supported_currency,
)

# The largest single amount we accept, in minor units (Stripe's own limit for a charge).
MAX_AMOUNT = 99_999_999


def platform_fee_percent() -> Decimal:
    return Decimal(str(settings.PLATFORM_FEE_PERCENT))


def platform_fee(amount: int, percent: Decimal | None = None) -> int:
    """The platform's fee on a release, in the same minor units as `amount`.

    Rule: fee = amount × percent / 100, rounded half up to a whole minor unit, and never more
    than the amount. The payout is always `amount - fee`, so fee + payout == amount exactly,
    for every currency (zero-decimal ones included, since both are in minor units).
    """
    if percent is None:
        percent = platform_fee_percent()
    if not 0 <= percent <= 100:
        raise ValueError("PLATFORM_FEE_PERCENT must be between 0 and 100")
    fee = (Decimal(amount) * percent / Decimal(100)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return min(int(fee), amount)
