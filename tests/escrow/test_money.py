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
