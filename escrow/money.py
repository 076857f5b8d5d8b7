"""Currencies and the one rounding rule for fees.

Amounts are integers in the currency's minor unit; a zero-decimal currency (jpy, krw, ...)
simply has exponent 0, so no arithmetic here ever looks at the exponent except for display.
"""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

# ISO 4217 exponents for the currencies we accept (Stripe's list, common ones).
CURRENCY_EXPONENTS: dict[str, int] = {
    "usd": 2, "eur": 2, "gbp": 2, "cad": 2, "aud": 2, "nzd": 2, "chf": 2, "sek": 2, "nok": 2,
    "dkk": 2, "pln": 2, "czk": 2, "huf": 2, "mxn": 2, "brl": 2, "sgd": 2, "hkd": 2, "inr": 2,
    "zar": 2, "ils": 2, "aed": 2, "thb": 2, "php": 2, "myr": 2, "ron": 2, "try": 2,
    "jpy": 0, "krw": 0, "vnd": 0, "clp": 0, "isk": 0, "ugx": 0, "xof": 0, "xaf": 0,
    "bhd": 3, "kwd": 3, "jod": 3, "omr": 3, "tnd": 3,
}  # fmt: skip
ZERO_DECIMAL = frozenset(code for code, exponent in CURRENCY_EXPONENTS.items() if exponent == 0)

# The largest single amount we accept, in minor units (Stripe's own limit for a charge).
MAX_AMOUNT = 99_999_999


def is_supported_currency(code: str) -> bool:
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    return CURRENCY_EXPONENTS[code]


def format_amount(amount: int, currency: str) -> str:
    digits = CURRENCY_EXPONENTS.get(currency, 2)
    value = Decimal(amount).scaleb(-digits)
    return f"{value:,.{digits}f} {currency.upper()}"


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
