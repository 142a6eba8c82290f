"""A market's quotes: the `Tick`, how a mid price becomes a quantized bid / ask /
last, and the checks a symbol's parameters pass."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal, InvalidOperation

import msgspec

from capflow.actors.model.money import (
    CONTEXT,
    MAX_ADJUSTED_EXPONENT,
    MAX_DECIMAL_PLACES,
    quant,
    round_down,
    round_half_even,
    round_up,
)
from capflow.actors.model.settings import SymbolConfig

#: a symbol first seen through `ensure_symbol` (or in a replay without config)
NEW_SYMBOL_SPREAD_BPS = 2.0


NEW_SYMBOL_QTY_PLACES = 6


MIN_NEW_PRICE_PLACES = 2


MAX_NEW_PRICE_PLACES = 8




_BPS_DIVISOR = Decimal(20000)  # half the spread: mid * bps / 10000 / 2


class Tick(msgspec.Struct, frozen=True):
    """One quote of one symbol. `liquidity` is the quantity available on each side."""

    symbol: str
    #: per symbol, from 1
    seq: int
    ts: datetime
    bid: Decimal
    ask: Decimal
    last: Decimal
    liquidity: Decimal


def _places_needed(d: Decimal) -> int:
    exponent = d.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def new_price_places(*prices: Decimal) -> int:
    needed = max(_places_needed(p) for p in prices)
    return min(max(needed, MIN_NEW_PRICE_PLACES), MAX_NEW_PRICE_PLACES)


def to_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a decimal number, not {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    elif isinstance(value, float):
        d = Decimal(repr(value))
    else:
        raise ValueError(f"{what} must be a decimal number, not {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"{what} must be finite, not {value!r}")
    if d and d.adjusted() > MAX_ADJUSTED_EXPONENT:
        raise ValueError(f"{what} is too large (at most 10^15): {value!r}")
    return d


def check_spec(symbol: str, spec: SymbolConfig) -> None:
    where = f"simulator symbol {symbol!r}"
    if not symbol:
        raise ValueError("a simulator symbol must have a name")
    if not spec.price.is_finite() or spec.price <= 0:
        raise ValueError(f"{where}: price must be greater than zero")
    if not (math.isfinite(spec.drift) and math.isfinite(spec.volatility)):
        raise ValueError(f"{where}: drift and volatility must be finite")
    if spec.volatility < 0:
        raise ValueError(f"{where}: volatility must not be negative")
    if not math.isfinite(spec.spread_bps) or spec.spread_bps < 0:
        raise ValueError(f"{where}: spread_bps must not be negative")
    for name in ("price_places", "qty_places"):
        if not 0 <= getattr(spec, name) <= MAX_DECIMAL_PLACES:
            raise ValueError(f"{where}: {name} must be between 0 and {MAX_DECIMAL_PLACES}")
    if not spec.liquidity.is_finite() or spec.liquidity < 0:
        raise ValueError(f"{where}: liquidity must not be negative")


class Quoter:
    """Turns a mid price into a quantized Tick for one symbol's spec."""

    __slots__ = ("liquidity", "places", "spread_bps", "step")

    def __init__(self, spec: SymbolConfig):
        self.places = spec.price_places
        self.step = quant(spec.price_places)
        self.spread_bps = Decimal(repr(float(spec.spread_bps)))
        self.liquidity = round_down(spec.liquidity, spec.qty_places)

    def quote(self, mid: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        half = CONTEXT.divide(CONTEXT.multiply(mid, self.spread_bps), _BPS_DIVISOR)
        bid = round_down(CONTEXT.subtract(mid, half), self.places)
        ask = round_up(CONTEXT.add(mid, half), self.places)
        if bid < self.step:
            bid = self.step
        if ask - bid < self.step:
            ask = bid + self.step
        last = min(max(round_half_even(mid, self.places), bid), ask)
        return bid, ask, last

    def tick(self, symbol: str, seq: int, ts: datetime, mid: Decimal,
             liquidity: Decimal | None = None) -> Tick:
        bid, ask, last = self.quote(mid)
        return Tick(symbol, seq, ts, bid, ask, last,
                    self.liquidity if liquidity is None else liquidity)
