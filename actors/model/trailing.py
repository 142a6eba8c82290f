"""Trailing stops and the stops of an open position, the pure part.

A trailing stop follows the best price the position's exit side has seen since it was
set (or since the market reached its activation price): for a long the highest bid,
for a short the lowest ask. Its stop sits `trail_amount` (a price distance) or
`trail_pct` (percent of the best price) behind that best price, rounded to the price
step towards the market (a long's up, a short's down: never further than asked), and it
only ever moves towards the market. A tick whose exit price is at or beyond the stop
closes the position with the reason ``trail``; a tick that hits both the trail and a
fixed stop-loss closes it as ``trail`` (it is the nearer of the two, or they are equal).

The state (`Trail.best`, `Trail.stop`; activated once `best` is set) is kept with the
ledger's position, so a restart resumes the trail where it was.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.money import parse_decimal, round_down, round_up

HUNDRED = Decimal(100)
#: the close reason of a position its trailing stop closed
TRAIL = "trail"


class Trail(msgspec.Struct, frozen=True, kw_only=True):
    """A trailing stop: how it trails, and where it is."""

    amount: Decimal | None = None
    pct: Decimal | None = None
    #: the exit price the market must reach before it trails (None: at once)
    activation: Decimal | None = None
    #: the best exit price since it activated (None: not activated yet)
    best: Decimal | None = None
    #: the current stop level (None: not activated yet)
    stop: Decimal | None = None


def parse_trail(amount: object = None, pct: object = None,
                activation: object = None) -> Trail | None:
    """A new trail from its optional fields (None: no trail), or `InvalidArgument`."""
    if amount is None and pct is None:
        if activation is not None:
            raise InvalidArgument("trail_activation",
                                  "trail_activation needs trail_amount or trail_pct")
        return None
    if amount is not None and pct is not None:
        raise InvalidArgument("trail_amount", "give trail_amount or trail_pct, not both")
    a = None if amount is None else parse_decimal(amount, "trail_amount")
    p = None if pct is None else parse_decimal(pct, "trail_pct")
    if p is not None and p >= HUNDRED:
        raise InvalidArgument("trail_pct", f"trail_pct {p} must be below 100")
    act = None if activation is None else parse_decimal(activation, "trail_activation")
    return Trail(amount=a, pct=p, activation=act)


def check_places(places: int, **prices: Decimal | None) -> None:
    """Prices of a symbol (levels, a trail's distance and activation) have at most its
    `places` decimals: a finer trail distance would round to no distance at all (a stop
    at the best price, hit by the first tick that does not improve it)."""
    unit = Decimal(1).scaleb(-places)
    for name, value in prices.items():
        if value is not None and value != value.quantize(unit):
            raise InvalidArgument(name, f"{name} has more than {places} decimal places")


def check_trail_places(trail: Trail | None, places: int) -> None:
    if trail is not None:
        check_places(places, trail_amount=trail.amount, trail_activation=trail.activation)


def _places(price: Decimal) -> int:
    return max(0, -price.as_tuple().exponent)


def level(side: str, trail: Trail, best: Decimal, places: int) -> Decimal:
    """The stop `trail` puts behind `best`, rounded to `places` towards the market."""
    if side == "BUY":
        raw = best - trail.amount if trail.amount is not None else (
            best * (1 - trail.pct / HUNDRED))
        return round_up(raw, places)
    raw = best + trail.amount if trail.amount is not None else (
        best * (1 + trail.pct / HUNDRED))
    return round_down(raw, places)


def advance(side: str, trail: Trail, price: Decimal, places: int | None = None) -> Trail:
    """`trail` after a tick whose exit price (a long's bid, a short's ask) is `price`:
    activated once the price reaches its activation, its best price and stop moved
    towards the market only. The same `trail` when nothing moved. `places`: the price
    step (default: the price's own decimals)."""
    long = side == "BUY"
    best = trail.best
    if best is None:
        act = trail.activation
        if act is not None and (price < act if long else price > act):
            return trail
        best = price
    elif (long and price > best) or (not long and price < best):
        best = price
    stop = level(side, trail, best, _places(price) if places is None else places)
    if trail.stop is not None and (stop <= trail.stop if long else stop >= trail.stop):
        stop = trail.stop
    if best == trail.best and stop == trail.stop:
        return trail
    return msgspec.structs.replace(trail, best=best, stop=stop)


def hit(side: str, trail: Trail | None, price: Decimal) -> bool:
    """Whether an exit price reaches the trail's stop (never before it activated)."""
    if trail is None or trail.stop is None:
        return False
    return price <= trail.stop if side == "BUY" else price >= trail.stop


def check_stops(side: str, tp: Decimal | None, sl: Decimal | None,
                bid: Decimal | None, ask: Decimal | None) -> None:
    """New stops of an open position against the market: a long exits at the bid, so
    its take-profit must be above it and its stop-loss below it; a short the reverse
    against the ask. `InvalidArgument` names the level on the wrong side."""
    exit_price = bid if side == "BUY" else ask
    if exit_price is None:
        if tp is not None and sl is not None and (tp <= sl if side == "BUY" else tp >= sl):
            raise InvalidArgument("tp_price", "tp_price and sl_price are on the wrong sides")
        return
    long = side == "BUY"
    where = "bid" if long else "ask"
    if tp is not None and (tp <= exit_price if long else tp >= exit_price):
        raise InvalidArgument("tp_price", f"tp_price {tp} must be "
                                          f"{'above' if long else 'below'} the {where} "
                                          f"{exit_price}")
    if sl is not None and (sl >= exit_price if long else sl <= exit_price):
        raise InvalidArgument("sl_price", f"sl_price {sl} must be "
                                          f"{'below' if long else 'above'} the {where} "
                                          f"{exit_price}")


def trail_fields(trail: Trail | None) -> dict[str, Decimal | None]:
    """A trail as the flat fields of a position record (all None: no trail)."""
    if trail is None:
        return dict.fromkeys(("trail_amount", "trail_pct", "trail_activation",
                              "trail_best", "trail_stop"))
    return {"trail_amount": trail.amount, "trail_pct": trail.pct,
            "trail_activation": trail.activation, "trail_best": trail.best,
            "trail_stop": trail.stop}


def order_trail(trail: Trail | None) -> dict[str, Decimal | None]:
    """A trail as the flat fields of an order (how it trails; all None: no trail)."""
    if trail is None:
        return dict.fromkeys(("trail_amount", "trail_pct", "trail_activation"))
    return {"trail_amount": trail.amount, "trail_pct": trail.pct,
            "trail_activation": trail.activation}


def trail_of(record) -> Trail | None:
    """The trail of a record with the flat ``trail_*`` fields (None: it has none)."""
    if record.trail_amount is None and record.trail_pct is None:
        return None
    return Trail(amount=record.trail_amount, pct=record.trail_pct,
                 activation=record.trail_activation,
                 best=getattr(record, "trail_best", None),
                 stop=getattr(record, "trail_stop", None))
