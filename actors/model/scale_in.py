"""Scale-in (DCA): an entry order that adds to an open position of its profile.

`order.submit` with `position_id` names the open position the order adds to: same
symbol, same side, no close asked for it. Its fills add to that position (the ledger's
`fill_entry`): quantity and reservation by what each fill holds, the entry price
volume-weighted over all of them, exactly as the fills of one order add up. The
position's take-profit / stop-loss stay as they are unless the order gives its own
(then the order's replace them on its first fill). The pre-trade checks and the capital
check apply to the size it adds; it takes no new open position slot of the account.

A scale-in order is told apart from the order that opened a position by its ids alone:
an entry's position id is its order id with ``pos_`` for ``ord_`` (a bare order's is
the order id itself), a scale-in's is another position's -- no stored flag is needed.
When the position closes first, the working scale-in orders of it are canceled.
"""

from __future__ import annotations

from capflow.actors.model.errors import Conflict, NotFound


def is_scale_in(o) -> bool:
    """Whether the order (`OrderCapital`, `OrderSpec`, `BrokerOrder`) adds to a position
    it did not open."""
    pid = o.position_id
    return pid is not None and pid not in (o.order_id, o.order_id.replace("ord_", "pos_", 1))


def check_target(p, position_id: str, symbol: str, side: str,
                 account_id: str | None) -> None:
    """The position a scale-in names must be open, of its symbol and side, held at the
    broker account the order goes to, and not closing (`p` is it, or None when it is
    not open)."""
    if p is None:
        raise NotFound("position", position_id)
    status = getattr(p, "status", "OPEN")
    if status != "OPEN":
        raise Conflict(f"position {position_id!r} is {status}: nothing to add to",
                       {"position_id": position_id, "status": status})
    if (p.symbol, p.side) != (symbol, side):
        raise Conflict(f"position {position_id!r} is {p.side} {p.symbol}, not "
                       f"{side} {symbol}", {"position_id": position_id,
                                            "symbol": p.symbol, "side": p.side})
    if p.account_id != account_id:  # the broker would hold the added size apart
        raise Conflict(f"position {position_id!r} is not held at account {account_id!r}",
                       {"position_id": position_id, "account_id": p.account_id})
    if p.close_requested is not None:
        raise Conflict(f"position {position_id!r} is being closed: nothing to add to",
                       {"position_id": position_id, "status": "CLOSING"})
