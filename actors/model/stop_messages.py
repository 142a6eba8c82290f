"""The events and ledger commands of a position's stops (`ledger_stops`): kept apart
from `messages` so each stays a readable size."""

from __future__ import annotations

from decimal import Decimal

from capflow.actors.model.messages import Command, Event, PositionCapital
from capflow.actors.model.trailing import Trail


class PositionStopsChanged(Event, frozen=True, tag="PositionStopsChanged"):
    """An open position's take-profit, stop-loss or trailing stop was set by hand
    (`position.set_stops`)."""

    position: PositionCapital


class TrailMoved(Event, frozen=True, tag="TrailMoved"):
    """A position's trailing stop moved (`position.trail_stop`, `position.trail_best`).
    Each move is stored; the event stream carries at most one per position per
    ``[oms] trail_event_interval_s``, and always the last before the position closes."""

    position: PositionCapital


class SetStops(Command, frozen=True):
    """Set an open position's stops: a level given replaces the one before, `clear`
    removes some ("tp", "sl", "trail"); checked against the market's `bid` / `ask`."""

    position_id: str
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    trail: Trail | None = None
    clear: tuple[str, ...] = ()
    bid: Decimal | None = None
    ask: Decimal | None = None


class MoveTrail(Command, frozen=True):
    """Record where the broker moved a position's trailing stop (`trail.best`,
    `trail.stop`); a move of a trail the position no longer has is left out."""

    position_id: str
    trail: Trail
