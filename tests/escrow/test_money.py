"""The fee rounding rule: fee = amount × percent / 100 rounded half up; payout = amount − fee,
so fee + payout == amount for every amount, percent and currency."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escrow.money import (
    MAX_AMOUNT,
    ZERO_DECIMAL,
    format_amount,
    is_supported_currency,
    platform_fee,
)


@pytest.mark.parametrize(
    ("amount", "percent", "fee"),
    [
        (10_000, "5", 500),
        (10, "5", 1),  # 0.5 rounds up
        (9, "5", 0),  # 0.45 rounds down
        (1, "5", 0),
        (1, "50", 1),  # 0.5 rounds up, never above the amount
        (1, "100", 1),
        (12_345, "2.5", 309),  # 308.625
        (99_999_999, "5", 5_000_000),  # 4,999,999.95
        (100, "0", 0),
    ],
)
def test_fee_examples(amount, percent, fee):
    assert platform_fee(amount, Decimal(percent)) == fee


@given(
    amount=st.integers(min_value=1, max_value=MAX_AMOUNT),
    percent=st.decimals(min_value=0, max_value=100, places=2),
)
def test_fee_plus_payout_is_the_amount_and_fee_is_bounded(amount, percent):
    fee = platform_fee(amount, percent)
    payout = amount - fee

    assert fee + payout == amount
    assert 0 <= fee <= amount
    assert abs(Decimal(fee) - Decimal(amount) * percent / 100) <= Decimal("0.5")


def test_fee_uses_the_platform_setting(settings):
    settings.PLATFORM_FEE_PERCENT = "10"

    assert platform_fee(1_000) == 100


def test_a_fee_percent_out_of_range_is_refused():
    with pytest.raises(ValueError):
        platform_fee(100, Decimal("101"))


def test_zero_decimal_currencies_format_without_decimals():
    assert "jpy" in ZERO_DECIMAL
    assert format_amount(1500, "jpy") == "1,500 JPY"
    assert format_amount(1500, "usd") == "15.00 USD"
    assert format_amount(1500, "kwd") == "1.500 KWD"


@pytest.mark.parametrize("code", ["USD", "us", "xxx", "", None, 5])
def test_unknown_or_uppercase_currencies_are_not_supported(code):
    assert not is_supported_currency(code)


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "text"),
    [
        (175050, "usd", "en_US", "1,750.50 USD"),
        (5, "usd", "en_US", "0.05 USD"),
        (0, "usd", "en_US", "0.00 USD"),
        (-500, "usd", "en_US", "-5.00 USD"),
        (1750, "jpy", "en_US", "1,750 JPY"),
        (1750, "jpy", "ja_JP", "1,750 JPY"),
        (1750500, "kwd", "de_DE", "1.750,500 KWD"),
        (1750500, "kwd", "en_US", "1,750.500 KWD"),
        (175050, "eur", "de_DE", "1.750,50 EUR"),
        (175050, "eur", "fr_FR", "1\u202f750,50 EUR"),
        (12345678, "inr", "en_IN", "1,23,456.78 INR"),
        # CLDR shows HUF without decimals; stored amounts are Stripe's minor units (exponent
        # 2), so the display keeps them and never rounds money away.
        (175050, "huf", "en_US", "1,750.50 HUF"),
        (99_999_999, "usd", "en_US", "999,999.99 USD"),
        (175050, "usd", "xx_NOWHERE", "1,750.50 USD"),  # unknown locale: the site's own
    ],
)
def test_money_is_written_as_people_write_it_in_every_exponent_and_locale(
    amount, currency, locale, text
):
    assert format_amount(amount, currency, locale=locale) == text


def test_every_supported_currency_shows_exactly_its_exponent_in_digits():
    from common.money import CURRENCY_EXPONENTS

    for code, digits in CURRENCY_EXPONENTS.items():
        number = format_amount(123456789, code, locale="en_US").split(" ")[0]
        decimals = number.split(".")[1] if "." in number else ""
        assert len(decimals) == digits, (code, number)


def test_the_active_language_picks_the_locale():
    from django.utils import translation

    with translation.override("de"):
        assert format_amount(175050, "eur") == "1.750,50 EUR"
    assert format_amount(175050, "eur") == "1,750.50 EUR"
