"""Exact money: parsing untrusted input into `Decimal` and quantizing per currency.

Every amount in capflow is a `Decimal`. Binary floats are accepted only at the edge and
read through their shortest repr (``0.1`` -> ``Decimal("0.1")``), never computed with.
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from capflow.actors.model.errors import InvalidArgument

#: Arithmetic context for all money math: wide enough that no intermediate rounds.
CONTEXT = decimal.Context(prec=38, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
MAX_SIGNIFICANT_DIGITS = 18
#: and at most this many decimal places (without `places`): "1e-900000" is ten bytes on
#: the wire and nine hundred thousand digits in an answer or a stored row
MAX_DECIMAL_PLACES = 18
#: amounts, prices and quantities are below 10**15: room for 18 significant digits at 3
#: decimal places, and far beyond any real balance
MAX_ADJUSTED_EXPONENT = 14
ZERO = Decimal(0)
#: the largest amount a client may send (anything below 10^15)
MAX_AMOUNT = Decimal(10) ** (MAX_ADJUSTED_EXPONENT + 1)

_QUANTS: dict[int, Decimal] = {p: Decimal(1).scaleb(-p) for p in range(19)}
#: what a number in text may look like: plain ASCII digits, one optional sign, an optional
#: point and an optional exponent. `Decimal()` alone also takes "1_000", full-width and
#: Arabic-Indic digits, "NaN" and surrounding spaces, which are not numbers on the wire.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def quant(places: int) -> Decimal:
    """The smallest unit for `places` decimal places (2 -> Decimal('0.01'))."""
    return _QUANTS[places]


def parse_decimal(value: object, field: str, *, allow_zero: bool = False,
                  allow_negative: bool = False, places: int | None = None) -> Decimal:
    """Turn a wire or API value into a Decimal, or raise `InvalidArgument` naming `field`.

    Accepts Decimal, int, str (plain ASCII decimal text, optionally with an exponent:
    ``"12.5"``, ``"-3"``, ``"1e3"``) and float (via its shortest repr); refuses bool, NaN,
    infinities, digit separators, non-ASCII digits, surrounding spaces, more than 18
    significant digits or decimal places, and (with `places`) more decimal places than
    the currency has: amounts are never silently rounded.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidArgument(field, f"{field} must be a decimal number")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        d = Decimal(repr(value))
    elif isinstance(value, str):
        if len(value) > 64:
            raise InvalidArgument(field, f"{field} is too long to be a number")
        if not _NUMBER.fullmatch(value):
            raise InvalidArgument(field, f"{field} is not a decimal number: {value!r}")
        try:
            d = Decimal(value)
        except decimal.InvalidOperation:  # pragma: no cover -- the pattern admits no such text
            raise InvalidArgument(field, f"{field} is not a decimal number: {value!r}") from None
    else:
        raise InvalidArgument(field, f"{field} must be a decimal number")
    if not d.is_finite():
        raise InvalidArgument(field, f"{field} must be finite")
    if d.is_zero():
        if not allow_zero:
            raise InvalidArgument(field, f"{field} must be greater than zero")
        return ZERO if places is None else ZERO.quantize(quant(places))
    if d < 0 and not allow_negative:
        raise InvalidArgument(field, f"{field} must not be negative")
    if d.adjusted() > MAX_ADJUSTED_EXPONENT:
        raise InvalidArgument(field, f"{field} is too large (at most 10^15)")
    if d.adjusted() < -MAX_DECIMAL_PLACES:  # (before normalize(), which would underflow)
        raise InvalidArgument(field, f"{field} has more than {MAX_DECIMAL_PLACES} "
                                     "decimal places")
    normal = d.normalize(CONTEXT).as_tuple()
    if len(normal.digits) > MAX_SIGNIFICANT_DIGITS:
        raise InvalidArgument(field, f"{field} has more than {MAX_SIGNIFICANT_DIGITS} "
                                     "significant digits")
    if -normal.exponent > MAX_DECIMAL_PLACES:
        raise InvalidArgument(field, f"{field} has more than {MAX_DECIMAL_PLACES} "
                                     "decimal places")
    if places is not None:
        q = d.quantize(quant(places), context=CONTEXT)
        if q != d:
            raise InvalidArgument(field, f"{field} has more than {places} decimal places")
        return q
    return d


def round_half_even(d: Decimal, places: int) -> Decimal:
    return d.quantize(quant(places), rounding=ROUND_HALF_EVEN, context=CONTEXT)


def round_up(d: Decimal, places: int) -> Decimal:
    """Round toward +infinity: used where rounding must never under-reserve."""
    return d.quantize(quant(places), rounding=ROUND_CEILING, context=CONTEXT)


def round_down(d: Decimal, places: int) -> Decimal:
    return d.quantize(quant(places), rounding=ROUND_FLOOR, context=CONTEXT)


def fmt(d: Decimal) -> str:
    """The wire form of an amount: a plain decimal string, never scientific notation."""
    return format(d, "f")
