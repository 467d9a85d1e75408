"""Money as operators read and type it: integer minor units <-> "987.50 CNY".

Amounts are stored and computed in integer minor units everywhere; this module
only converts at the admin's edge, with integer arithmetic for display and
string parsing for input (never a float).
"""

import re

# ISO 4217 minor-unit exponents of the currencies the service may hold.
MINOR_UNIT_EXPONENTS = {"CNY": 2, "HKD": 2, "TWD": 2, "SGD": 2, "USD": 2, "EUR": 2, "JPY": 0, "KRW": 0, "KWD": 3}

_MAJOR_AMOUNT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def minor_unit_exponent(currency: str) -> int:
    try:
        return MINOR_UNIT_EXPONENTS[currency]
    except KeyError:
        raise ValueError(f"No minor-unit exponent is known for currency {currency!r}.") from None


def format_money(amount: int, currency: str, *, signed: bool = False) -> str:
    """987.50 CNY from 98750; `signed` puts a + on credits (ledger legs)."""
    exponent = minor_unit_exponent(currency)
    sign = "-" if amount < 0 else ("+" if signed and amount > 0 else "")
    major, minor = divmod(abs(amount), 10**exponent)
    digits = f"{major}.{minor:0{exponent}d}" if exponent else str(major)
    return f"{sign}{digits} {currency}"


def parse_major_amount(text: str, currency: str) -> int:
    """Minor units from an operator's "12.5" or "-0.07"; ValueError for anything else,
    including more decimals than the currency has."""
    exponent = minor_unit_exponent(currency)
    text = text.strip()
    if not _MAJOR_AMOUNT.fullmatch(text):
        raise ValueError("Enter an amount such as 12.50 or -3 (digits, one optional point, no separators).")
    decimals = len(text.partition(".")[2])
    if decimals > exponent:
        raise ValueError(f"{currency} has {exponent} decimal places; {text} has {decimals}.")
    sign = -1 if text.startswith("-") else 1
    whole, _, fraction = text.lstrip("+-").partition(".")
    return sign * (int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or 0))
