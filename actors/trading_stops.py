"""`position.set_stops`: move an open position's take-profit / stop-loss and set or
clear its trailing stop (the blocking half of `Trading`, beside `close_position`).

The ledger records the new stops first (stored, `PositionStopsChanged`), then the broker
is told, one call per position at a time, so the broker's last word is the ledger's; a
restart gives the broker what the ledger holds, so the two agree after one.
"""

from __future__ import annotations

import threading
from typing import Any

from capflow.actors.account_messages import Stops
from capflow.actors.model.errors import Conflict, Denial, Denied, InvalidArgument, NotFound
from capflow.actors.model.messages import PositionCapital
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.order_types import VENUE_UNSUPPORTED_ORDER
from capflow.actors.model.stop_messages import SetStops
from capflow.actors.model.trailing import (
    check_places,
    check_trail_places,
    parse_trail,
    trail_of,
)

#: one position's set_stops at a time, from the ledger's record to the broker's: two at
#: once could reach the broker in the other order and leave it watching stops the ledger
#: no longer holds (striped by position: a fixed number of locks, whatever the positions)
_LOCKS = tuple(threading.Lock() for _ in range(64))


def unsupported_trail(account_id: str | None) -> Denial:
    return Denial("RISK_REJECTED", f"the broker adapter of account {account_id!r} does "
                                   "not watch trailing stops",
                  {"reason": VENUE_UNSUPPORTED_ORDER, "limit": None, "value": "trail"})


def set_stops(trading, profile_id: str, position_id: str, *, tp_price: Any = None,
              sl_price: Any = None, trail_amount: Any = None, trail_pct: Any = None,
              trail_activation: Any = None,
              clear: list[str] | tuple[str, ...] | None = ()) -> PositionCapital:
    """Blocking: set a position's stops (what is not given stays as it was; `clear`
    removes ``tp``, ``sl`` or ``trail``). The position as it is now; the same position,
    unchanged and without an event, when it already had these stops."""
    if clear is None:
        clear = ()
    if not isinstance(clear, list | tuple):  # a str would be taken letter by letter
        raise InvalidArgument("clear", "clear is a list of names: tp, sl, trail")
    tp = None if tp_price is None else parse_decimal(tp_price, "tp_price")
    sl = None if sl_price is None else parse_decimal(sl_price, "sl_price")
    trail = parse_trail(trail_amount, trail_pct, trail_activation)
    p = trading.open_at_broker(profile_id, position_id, "it has no stops to move")
    if trail is not None and not trading.accounts.supports_trailing(p.account_id):
        raise Denied(unsupported_trail(p.account_id))
    tick = trading.board.get(p.symbol)
    # a symbol without configured places has those of its prices: its entry's and now's
    entry = p.entry_price or p.entry_notional / p.qty_total  # (rows before entry_price)
    places = max(trading.price_places(p.account_id, p.symbol, x) for x in (
        entry, *(() if tick is None else (tick.bid, tick.ask))))
    check_places(places, tp_price=tp, sl_price=sl)
    check_trail_places(trail, places)
    cmd = SetStops(position_id=position_id, tp_price=tp, sl_price=sl, trail=trail,
                   clear=tuple(clear), bid=None if tick is None else tick.bid,
                   ask=None if tick is None else tick.ask, cause=position_id)
    with _LOCKS[hash((profile_id, position_id)) % len(_LOCKS)]:
        out = trading._call(profile_id, cmd)
        p = out.result
        if not out.reused:
            try:
                trading.accounts.ask(p.account_id, Stops(
                    profile_id, position_id, p.tp_price, p.sl_price, trail_of(p),
                    trail_changed=trail is not None or "trail" in clear))
            except NotFound:  # it exited in the meantime
                raise Conflict(f"position {position_id!r} is no longer open at the broker",
                               {"position_id": position_id,
                                "status": "CLOSED"}) from None
    return p

