"""How an `AccountManagerActor` amends a working order (`order.amend`) and reduces a
position (`position.reduce`).

On the manager's thread, in order: the ledger books the amend (its capital re-reserved
and stored) while the manager waits, then the broker applies it. Nothing the broker
reports can come between the two -- its fills are reported on this same thread, and the
ones reported before reach the ledger first -- so the ledger and the broker never
disagree about the order. A venue adapter that cannot amend is refused before the
ledger is asked (RISK_REJECTED, ``details.reason`` VENUE_UNSUPPORTED_ORDER).
"""

from __future__ import annotations

from typing import Any

from capflow.actors.account_messages import Amend, Reduce
from capflow.actors.model.amend import ORDER_NOT_AMENDABLE
from capflow.actors.model.errors import Conflict, Denial, Denied
from capflow.actors.model.order_types import VENUE_UNSUPPORTED_ORDER
from capflow.actors.reply import Reply
from capflow.brokers.base import BrokerAdapter

#: how long the manager waits for the ledger to store an amend
BOOK_TIMEOUT_S = 30.0


def amend(actor, msg: Amend, reply: Reply) -> Any:
    cmd = msg.cmd
    adapter = actor.adapter
    if type(adapter).amend_order is BrokerAdapter.amend_order:
        raise Denied(Denial("RISK_REJECTED", "the venue adapter of account "
                            f"{actor.account_id!r} does not amend orders: cancel it and "
                            "submit a new one", {"reason": VENUE_UNSUPPORTED_ORDER,
                                                 "limit": None, "value": "amend"}))
    if cmd.order_id not in actor._working or cmd.order_id in actor._canceling:
        raise Conflict(f"order {cmd.order_id!r} is not working at the broker (it ended or "
                       "is being canceled)", {"order_id": cmd.order_id,
                                             "reason": ORDER_NOT_AMENDABLE})
    booked = Reply()
    actor._submit(msg.profile_id, cmd, lambda r: booked.finish_with(*r.result()))
    outcome = booked.get(BOOK_TIMEOUT_S)
    o = outcome.result
    if not outcome.reused:
        adapter.amend_order(o.order_id, o.qty, o.price, o.trigger_price, o.max_price)
        actor._working[o.order_id] = (msg.profile_id, o.qty - o.filled_qty)
    return o


def reduce(actor, msg: Reduce, reply: Reply) -> Any:
    """Ask the broker for a partial exit; its fill is booked as any exit's (`fill_exit`:
    the reservation released and the PnL realized pro rata)."""
    asked = actor.adapter.reduce_position(msg.position_id, msg.qty)
    if asked is None:
        raise Denied(Denial("RISK_REJECTED", "the venue adapter of account "
                            f"{actor.account_id!r} does not reduce positions: close it",
                            {"reason": VENUE_UNSUPPORTED_ORDER, "limit": None,
                             "value": "reduce"}))
    if not asked:
        raise Conflict(f"position {msg.position_id!r} is not open at the broker, or an exit "
                       "of it is under way", {"position_id": msg.position_id,
                                             "status": "EXITING"})
    return True
