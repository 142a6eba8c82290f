"""A venue's instrument rules (lot step, price tick, minimums) read from ccxt's market
structures, for the entry flow to round and check entries by before it reserves."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from capflow.actors.model.money import ZERO
from capflow.actors.model.venue import VenueRule, VenueRules
from capflow.brokers.ccxt_engine import dec


def venue_rules(configured: Mapping[str, str], places: int, digits: bool,
                markets: dict) -> tuple[VenueRules, set[str]]:
    """The rules of the `configured` symbols (capflow symbol -> the venue's), and of every
    active spot market by its venue id (BTCUSDT for BTC/USDT); and the configured ones
    the venue does not list. `digits`: ccxt gives precisions as decimal places, not
    steps."""
    rules: dict[str, VenueRule] = {}
    for m in markets.values():
        if not m.get("spot") or m.get("active") is False:
            continue
        rules.setdefault(m["id"], _rule(m, places, digits))
    missing = set()
    for capflow_symbol, venue_symbol in configured.items():
        m = markets.get(venue_symbol)
        if m is None or not m.get("spot") or m.get("active") is False:
            missing.add(venue_symbol)
        else:
            rules[capflow_symbol] = _rule(m, places, digits)
    return VenueRules(rules, loaded=True), missing


def _rule(m: dict, places: int, digits: bool) -> VenueRule:
    """A market's rule from ccxt's market structure (its precision is a step, or with
    `digits` a number of decimal places)."""
    limits = m.get("limits") or {}
    precision = m.get("precision") or {}

    def step(value) -> Decimal:
        if value is None:
            return ZERO
        return Decimal(1).scaleb(-int(value)) if digits else dec(value)

    return VenueRule(venue_symbol=m["symbol"], qty_step=step(precision.get("amount")),
                     price_tick=step(precision.get("price")),
                     min_qty=dec((limits.get("amount") or {}).get("min")),
                     min_notional=dec((limits.get("cost") or {}).get("min")), spot=True)
