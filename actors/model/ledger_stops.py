"""A ledger's position stops: set by hand (`set_stops`) and moved by a trailing stop
(`move_trail`). Functions of a `Ledger`, called inside its actor like its methods."""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import replace

from capflow.actors.model.errors import Conflict, InvalidArgument
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.stop_messages import (
    MoveTrail,
    PositionStopsChanged,
    SetStops,
    TrailMoved,
)
from capflow.actors.model.trailing import check_stops, trail_fields

CLEARABLE = ("tp", "sl", "trail")


def set_stops(ledger, cmd: SetStops, now: datetime, cause: str = "") -> Outcome:
    """Replace an open position's take-profit / stop-loss / trailing stop. A new trail
    starts afresh (from its activation, if any). Setting what is set changes nothing
    (``reused``). A position that is not open (closed, or its close was asked for) is
    `Conflict`."""
    for name in cmd.clear:
        if name not in CLEARABLE:
            raise InvalidArgument("clear", f"clear takes {list(CLEARABLE)}, not {name!r}")
    if "tp" in cmd.clear and cmd.tp_price is not None:
        raise InvalidArgument("tp_price", "tp_price is both set and cleared")
    if "sl" in cmd.clear and cmd.sl_price is not None:
        raise InvalidArgument("sl_price", "sl_price is both set and cleared")
    if "trail" in cmd.clear and cmd.trail is not None:
        raise InvalidArgument("trail_amount", "the trail is both set and cleared")
    p = ledger.positions.get(cmd.position_id)
    if p is None:  # the caller tells a position never known (NotFound) first
        raise Conflict(f"position {cmd.position_id!r} is not open",
                       {"position_id": cmd.position_id, "status": "CLOSED"})
    if p.close_requested is not None:
        raise Conflict(f"position {cmd.position_id!r} is being closed",
                       {"position_id": cmd.position_id, "status": "CLOSING"})
    tp = None if "tp" in cmd.clear else (cmd.tp_price if cmd.tp_price is not None
                                         else p.tp_price)
    sl = None if "sl" in cmd.clear else (cmd.sl_price if cmd.sl_price is not None
                                         else p.sl_price)
    # only the levels given are checked against the market: one kept stays as it was
    check_stops(p.side, cmd.tp_price, cmd.sl_price, cmd.bid, cmd.ask)
    check_stops(p.side, tp, sl, None, None)
    fields = {"tp_price": tp, "sl_price": sl}
    if "trail" in cmd.clear:
        fields.update(trail_fields(None))
    elif cmd.trail is not None:
        fields.update(trail_fields(cmd.trail))
    new = replace(p, **fields)
    if new == p:
        return Outcome(p, [], reused=True)
    ledger.positions[p.position_id] = new
    return Outcome(new, [ledger._event(PositionStopsChanged, now, cause or p.position_id,
                                       position=new)])


def move_trail(ledger, cmd: MoveTrail, now: datetime, cause: str = "") -> Outcome:
    """Record the trailing stop's new best price and stop (reported by the broker, which
    watches it). A position closed meanwhile, without a trail, or whose trail was
    replaced since (`set_stops` raced the broker's move: the move is of the trail
    before) is left as it is; so is a move that does not move it."""
    p = ledger.positions.get(cmd.position_id)
    t = cmd.trail
    if p is None or (p.trail_amount, p.trail_pct, p.trail_activation) != (
            t.amount, t.pct, t.activation):
        return Outcome(p, [], reused=True)
    if (p.trail_best, p.trail_stop) == (t.best, t.stop):
        return Outcome(p, [], reused=True)
    new = replace(p, trail_best=t.best, trail_stop=t.stop)
    ledger.positions[p.position_id] = new
    return Outcome(new, [ledger._event(TrailMoved, now, cause or p.position_id,
                                       position=new)])
