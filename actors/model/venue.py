"""A venue's trading rules for one instrument, and what they do to an entry before its
capital is reserved.

A live venue refuses an order whose quantity is not a multiple of its lot step, whose
price is not on its tick, or whose value is below its minimum. capflow applies those
rules itself, before the ledger reserves anything: the quantity is rounded down to the
lot step, a BUY limit price down and a SELL limit price up to the tick (the side that
never pays more than was decided), and the minimum quantity and notional are checked
after rounding. A refusal is a `Denial` with a stable reason code (docs/protocol.md):

- ``VENUE_UNKNOWN_SYMBOL``: the venue lists no such (active, spot) instrument;
- ``VENUE_RULES_UNKNOWN``: the account has not loaded the venue's instruments yet (it is
  still connecting, or gave up);
- ``VENUE_NO_SHORT``: a SELL entry on a spot account, which cannot sell what it does not
  hold;
- ``VENUE_MIN_QTY``: the quantity, rounded down to the lot step, is below the venue's
  minimum (zero included);
- ``VENUE_MIN_NOTIONAL``: the notional after rounding is below the venue's minimum;
- ``VENUE_UNSUPPORTED_ORDER``: an order type or time in force the live adapter does not
  place (STOP, STOP_LIMIT, GTD: actors/model/order_types.py).

Pure: no I/O; the broker adapter builds the rules from what the venue says.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from capflow.actors.model.errors import Denial
from capflow.actors.model.money import ZERO

VENUE_REASONS = ("VENUE_UNKNOWN_SYMBOL", "VENUE_RULES_UNKNOWN", "VENUE_NO_SHORT",
                 "VENUE_MIN_QTY", "VENUE_MIN_NOTIONAL", "VENUE_UNSUPPORTED_ORDER")


class VenueRule(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's rules at its venue (all in the instrument's units)."""

    #: the venue's name of the instrument (ccxt's unified symbol, e.g. ``BTC/USDT``)
    venue_symbol: str
    #: quantities are multiples of this
    qty_step: Decimal
    #: limit prices are multiples of this
    price_tick: Decimal
    min_qty: Decimal = ZERO
    #: the smallest order value (quantity times price) the venue takes
    min_notional: Decimal = ZERO
    #: spot: entries only BUY (a SELL would sell what the account does not hold)
    spot: bool = True


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if step <= 0:
        return value
    n = (value / step).to_integral_value(rounding=rounding)
    return (n * step).quantize(step) if n else ZERO


def qty_down(qty: Decimal, rule: VenueRule) -> Decimal:
    """`qty` rounded down to the lot step (zero when below one step)."""
    return _to_step(qty, rule.qty_step, ROUND_FLOOR)


def price_to_tick(side: str, price: Decimal, rule: VenueRule) -> Decimal:
    """A limit price on the tick: a BUY rounded down, a SELL up."""
    return _to_step(price, rule.price_tick, ROUND_FLOOR if side == "BUY" else ROUND_CEILING)


class VenueRules(msgspec.Struct, frozen=True):
    """What an account's adapter published: capflow symbol -> its rule. `loaded` False
    while the venue's instruments are not known yet."""

    rules: dict[str, VenueRule] = {}
    loaded: bool = False
    #: symbols the venue does not list, as the adapter found them (capflow names)
    unknown: frozenset = frozenset()

    def rule(self, symbol: str) -> VenueRule | Denial:
        if not self.loaded:
            return Denial("RISK_REJECTED", "the venue's instruments are not loaded yet "
                          "(the account is not connected)",
                          {"reason": "VENUE_RULES_UNKNOWN", "limit": None, "value": symbol})
        r = self.rules.get(symbol)
        if r is None:
            return Denial("RISK_REJECTED", f"the venue lists no spot instrument {symbol!r}",
                          {"reason": "VENUE_UNKNOWN_SYMBOL", "limit": None, "value": symbol})
        return r


def apply_rule(side: str, qty: Decimal, price: Decimal | None, reference: Decimal,
               rule: VenueRule, *, entry: bool = True
               ) -> tuple[Decimal, Decimal | None] | Denial:
    """(qty, limit price) of an order as the venue will take it, or the `Denial` that
    refuses it. `price` is the limit price (None: a market order, checked at
    `reference`); the notional is checked at the rounded limit price or `reference`."""
    if entry and rule.spot and side != "BUY":
        return Denial("RISK_REJECTED", "a spot account cannot open a short: SELL entries "
                      "are refused", {"reason": "VENUE_NO_SHORT", "limit": "BUY",
                                      "value": side})
    q = qty_down(qty, rule)
    px = None if price is None else price_to_tick(side, price, rule)
    floor = max(rule.min_qty, rule.qty_step)
    if q < floor:
        return Denial("RISK_REJECTED", f"quantity {qty} rounds down to {q} at the venue's "
                      f"lot step {rule.qty_step}: below its minimum {floor}",
                      {"reason": "VENUE_MIN_QTY", "limit": floor, "value": q})
    notional = q * (px if px is not None else reference)
    if notional < rule.min_notional:
        return Denial("RISK_REJECTED", f"notional {notional} (after rounding to the venue's "
                      f"steps) is below the venue's minimum {rule.min_notional}",
                      {"reason": "VENUE_MIN_NOTIONAL", "limit": rule.min_notional,
                       "value": notional})
    return q, px
