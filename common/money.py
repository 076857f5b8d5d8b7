"""Currencies, and money written as people write it.

Amounts are integers in the currency's minor unit (the unit the gateway charges in); a
zero-decimal currency (jpy, krw, ...) has exponent 0, a three-decimal one (kwd, bhd, ...)
exponent 3. Nothing but display ever looks at the exponent.

Display goes through Babel (CLDR's number formats for every locale) rather than hand-written
grouping: `1,750.50 USD` in English, `1.750,500 KWD` in German, `1 750,50 EUR` in French. The
ISO code follows the number instead of a symbol because this marketplace holds several
currencies whose symbols collide ($ is USD, CAD, AUD, ...). The digits are always the
currency's exponent here, not CLDR's: CLDR shows HUF and ISK without decimals, but the
amounts are stored and charged in Stripe's minor units, and a display must not round money.
"""

from decimal import Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.numbers import NumberPattern, parse_pattern
from django.conf import settings
from django.utils import translation

# ISO 4217 exponents for the currencies we accept (Stripe's list, common ones).
CURRENCY_EXPONENTS: dict[str, int] = {
    "usd": 2, "eur": 2, "gbp": 2, "cad": 2, "aud": 2, "nzd": 2, "chf": 2, "sek": 2, "nok": 2,
    "dkk": 2, "pln": 2, "czk": 2, "huf": 2, "mxn": 2, "brl": 2, "sgd": 2, "hkd": 2, "inr": 2,
    "zar": 2, "ils": 2, "aed": 2, "thb": 2, "php": 2, "myr": 2, "ron": 2, "try": 2,
    "jpy": 0, "krw": 0, "vnd": 0, "clp": 0, "isk": 0, "ugx": 0, "xof": 0, "xaf": 0,
    "bhd": 3, "kwd": 3, "jod": 3, "omr": 3, "tnd": 3,
}  # fmt: skip
ZERO_DECIMAL = frozenset(code for code, exponent in CURRENCY_EXPONENTS.items() if exponent == 0)


def is_supported_currency(code: str) -> bool:
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    return CURRENCY_EXPONENTS.get(code, 2)


@lru_cache(maxsize=256)
def _pattern(locale_name: str, digits: int) -> tuple[Locale, NumberPattern]:
    try:
        locale = Locale.parse(locale_name)
    except (UnknownLocaleError, ValueError):
        locale = Locale.parse(translation.to_locale(settings.LANGUAGE_CODE))
    pattern = parse_pattern(locale.decimal_formats[None].pattern)
    pattern.frac_prec = (digits, digits)
    return locale, pattern


def format_amount(amount: int, currency: str, *, locale: str | None = None) -> str:
    """`175050, "usd"` → "1,750.50 USD"; `1750, "jpy"` → "1,750 JPY"; `1750500, "kwd"` with
    locale "de" → "1.750,500 KWD". The locale is the active language's unless given."""
    digits = exponent(currency)
    locale_name = locale or translation.to_locale(
        translation.get_language() or settings.LANGUAGE_CODE
    )
    babel_locale, pattern = _pattern(locale_name, digits)
    number = pattern.apply(Decimal(int(amount)).scaleb(-digits), babel_locale)
    return f"{number} {currency.upper()}"
