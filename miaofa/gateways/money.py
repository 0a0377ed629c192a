"""Money at the gateway edge: gateways speak decimal strings ("9.90" yuan), we keep integer minor units.

Never float: a notify saying "9.9000001" or 9.9 as a JSON number must not become 990 by rounding.
"""

import re
from decimal import Decimal, InvalidOperation

# Currencies whose minor unit is the unit itself (ISO 4217 exponent 0); everything else has cents.
ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
CURRENCY_RE = re.compile(r"[A-Z]{3,8}")  # ISO 4217, and tokens such as USDT
_DECIMAL_RE = re.compile(r"[0-9]{1,15}(\.[0-9]{1,8})?")


class MoneyError(ValueError):
    """An amount or currency a gateway sent that is not exactly one positive amount."""


def exponent(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL else 2


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """ "9.90" CNY → 990. Only a plain decimal string, a Decimal or an int; more digits than the currency
    has ("9.901"), signs, exponents, NaN, floats and bools are refused."""
    if isinstance(amount, bool) or isinstance(amount, float):
        raise MoneyError("amount is not a decimal")
    if isinstance(amount, str):
        if not _DECIMAL_RE.fullmatch(amount):
            raise MoneyError("amount is not a plain decimal")
        value = Decimal(amount)
    elif isinstance(amount, Decimal):
        if not amount.is_finite():
            raise MoneyError("amount is not finite")
        value = amount
    elif isinstance(amount, int):
        value = Decimal(amount)
    else:
        raise MoneyError("amount is not a decimal")
    try:
        minor = value.scaleb(exponent(currency))
        if minor != minor.to_integral_value():
            raise MoneyError("amount has more decimals than its currency")
    except InvalidOperation:
        raise MoneyError("amount is not a decimal") from None
    if minor <= 0:
        raise MoneyError("amount is not positive")
    return int(minor)


def to_major(minor: int, currency: str) -> str:
    """990 CNY → "9.90"; 500 JPY → "500"."""
    places = exponent(currency)
    return str(Decimal(minor).scaleb(-places).quantize(Decimal(1).scaleb(-places)))


def check_currency(value: object) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value):
        raise MoneyError("bad currency")
    return value
