"""Minor units <-> money as operators read and type it."""

import pytest

from wallets.money import format_money, parse_major_amount


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (98750, "CNY", "987.50 CNY"),
        (0, "CNY", "0.00 CNY"),
        (7, "CNY", "0.07 CNY"),
        (-120, "CNY", "-1.20 CNY"),
        (9_223_372_036_854_775_807, "CNY", "92233720368547758.07 CNY"),  # bigint's top, no float rounding
        (500, "JPY", "500 JPY"),
        (1234, "KWD", "1.234 KWD"),
    ],
)
def test_minor_units_read_as_money(amount, currency, shown):
    assert format_money(amount, currency) == shown


def test_signed_money_marks_credits():
    assert [format_money(a, "CNY", signed=True) for a in (250, -250)] == ["+2.50 CNY", "-2.50 CNY"]


@pytest.mark.parametrize(
    ("text", "minor"),
    [("987.50", 98750), ("987.5", 98750), ("12", 1200), (" -0.07 ", -7), ("+3", 300),
     ("92233720368547758.07", 9_223_372_036_854_775_807), ("0.10", 10)],
)
def test_major_units_convert_exactly(text, minor):
    assert parse_major_amount(text, "CNY") == minor


@pytest.mark.parametrize("text", ["0.001", "1.234", "1e3", "1,000", ".5", "5.", "", "nan", "inf", "٣", "1 000", "--1"])
def test_anything_but_a_plain_amount_within_the_currency_decimals_is_refused(text):
    with pytest.raises(ValueError):
        parse_major_amount(text, "CNY")


def test_a_currency_without_minor_units_takes_no_decimals():
    assert parse_major_amount("500", "JPY") == 500
    with pytest.raises(ValueError, match="0 decimal places"):
        parse_major_amount("500.0", "JPY")


def test_an_unknown_currency_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="XYZ"):
        format_money(100, "XYZ")
