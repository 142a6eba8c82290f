"""Amending a working order (`order.amend`): its price, quantity and / or trigger price.

An amended order reserves what it can cost as amended, by the formulas an order of its
type reserves at submit (`reservation_for`), for what is left of it (its quantity less
what filled): the difference is taken from available capital, or given back to it. An
amend that cannot be covered is refused (INSUFFICIENT_CAPITAL) and changes nothing.

What can be amended: a LIMIT, a STOP not yet triggered, a STOP_LIMIT (its trigger only
before it triggered). A MARKET order, a triggered STOP (a market order now) and an order
that ended are refused with CONFLICT, ``details.reason`` ORDER_NOT_AMENDABLE (and the
order's ``status``). A quantity at or below what already filled is INVALID_ARGUMENT.

An amend is idempotent by value: asking for what the order already is changes nothing
and is answered ``reused``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec
from msgspec.structs import replace

from capflow.actors.model.errors import Conflict, Denial, InvalidArgument, NotFound
from capflow.actors.model.messages import Command, Event, OrderCapital
from capflow.actors.model.orders import (
    entry_cost,
    entry_reference,
    max_fill_price,
    order_reservation,
)
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.risk import Proposal

AMENDABLE_TYPES = ("LIMIT", "STOP", "STOP_LIMIT")
#: `details.reason` of the CONFLICT that refuses to amend an order
ORDER_NOT_AMENDABLE = "ORDER_NOT_AMENDABLE"


class OrderAmended(Event, frozen=True, tag="OrderAmended"):
    """A working order's price, quantity or trigger changed; its reservation with them."""

    order: OrderCapital
    #: what it was before: quantity, price, trigger price, reservation
    prev_qty: Decimal
    prev_price: Decimal | None
    prev_trigger_price: Decimal | None
    prev_reserved: Decimal
    #: the reservation's change: positive taken from available, negative given back
    delta: Decimal


class AmendOrder(Command, frozen=True):
    """Amend a working order (a ledger command): the new terms and what the order
    reserves with them, computed for `filled_qty` filled (refused if more filled since)."""

    order_id: str
    qty: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    amount: Decimal
    max_price: Decimal | None
    filled_qty: Decimal


class Pricing(msgspec.Struct, frozen=True, kw_only=True):
    """What an order's reservation is computed with besides its own terms: the market,
    the account's fees, the slippage buffer and the places of money and price."""

    bid: Decimal | None
    ask: Decimal | None
    buffer_pct: Decimal
    taker_fee: Decimal
    maker_fee: Decimal
    places: int
    price_places: int


def reservation_for(type: str, side: str, qty: Decimal, price: Decimal | None,
                    reference: Decimal, trigger: Decimal | None,
                    p: Pricing) -> tuple[Decimal, Decimal]:
    """(amount, cap): what an order of `qty` reserves and the highest price the broker
    may fill it at. A MARKET / STOP reserves at the worse of `reference` and the market
    plus the slippage buffer and the taker fee; a BUY limit its cost at its limit; a SELL
    limit its cost at the worse of its limit (a STOP_LIMIT's trigger) and the market."""
    if type in ("MARKET", "STOP"):
        ref = entry_reference(side, reference, p.bid, p.ask)
        amount = order_reservation(qty, ref, p.buffer_pct, p.taker_fee, p.places)
        return amount, max_fill_price(qty, ref, p.buffer_pct, p.taker_fee, amount,
                                      p.price_places, p.places)
    if side == "BUY":  # fills at its limit or lower
        return entry_cost(qty, price, p.maker_fee, p.places), price
    worst = price if type == "LIMIT" else max(price, trigger)
    cap = entry_reference(side, worst, p.bid, p.ask)
    return entry_cost(qty, cap, p.maker_fee, p.places), cap


def not_amendable(o: OrderCapital, why: str) -> Conflict:
    return Conflict(f"order {o.order_id!r} cannot be amended: {why}",
                    {"order_id": o.order_id, "status": o.status, "type": o.type,
                     "reason": ORDER_NOT_AMENDABLE})


def check_amendable(o: OrderCapital, trigger_changes: bool) -> None:
    """`not_amendable` unless `o` is a working order of a type that can change so."""
    if o.status not in ("OPEN", "PARTIALLY_FILLED"):
        raise not_amendable(o, f"it is {o.status}")
    if o.type not in AMENDABLE_TYPES:
        raise not_amendable(o, f"a {o.type} order fills at once")
    if o.triggered_at is not None and o.type == "STOP":
        raise not_amendable(o, "the STOP triggered: it is a market order now")
    if o.triggered_at is not None and trigger_changes:
        raise not_amendable(o, "it triggered already: its trigger_price is spent")


def check_qty(o: OrderCapital, qty: Decimal) -> None:
    if qty <= o.filled_qty:
        raise InvalidArgument("qty", f"qty {qty} is not above the {o.filled_qty} of order "
                                     f"{o.order_id!r} that already filled")


class LedgerAmend:
    """`Ledger`'s amends (a mixin: it uses the ledger's orders, buckets and checks)."""

    def amend_order(self, order_id: str, qty: Decimal, price: Decimal | None,
                    trigger_price: Decimal | None, amount: Decimal,
                    max_price: Decimal | None, filled_qty: Decimal, now: datetime,
                    cause: str = "") -> Outcome | Denial:
        o = self.orders.get(order_id)
        if o is None:
            ended = self.ended_orders.get(order_id)
            if ended is not None:
                raise not_amendable(ended, f"it is {ended.status}")
            raise NotFound("order", order_id)
        check_amendable(o, trigger_price != o.trigger_price)
        check_qty(o, qty)
        if o.filled_qty != filled_qty:  # it filled since the amount was computed
            raise Conflict(f"order {order_id!r} filled {o.filled_qty - filled_qty} more "
                           "while it was amended: amend it again",
                           {"order_id": order_id, "filled_qty": o.filled_qty})
        value = self._amount(amount)
        if (qty, price, trigger_price, value, max_price) == (
                o.qty, o.price, o.trigger_price, o.reserved, o.max_price):
            return Outcome(o, [], reused=True)
        delta = value - o.reserved
        if qty > o.qty:  # added size: the pre-trade checks apply to it
            ref = price or trigger_price or max_price or o.reserved / (o.qty - o.filled_qty)
            if denied := self._risk_denial(Proposal(o.symbol, o.side, qty - o.qty, ref,
                                                    o.sl_price, self.risk.mark(o.symbol),
                                                    new_position=False), now):
                return denied
        if delta > 0:
            if denied := self._short(delta):
                return denied
            for c in self.concentration_checks(o.symbol, delta):
                if not c.ok:
                    return Denial("RISK_REJECTED", f"{c.check}: {c.value} against the "
                                                   f"limit {c.limit}",
                                  {"reason": c.code, "limit": c.limit, "value": c.value,
                                   "check": c.check})
        amended = replace(o, qty=qty, price=price, trigger_price=trigger_price,
                          reserved=value, max_price=max_price, updated_at=now)
        self.orders[order_id] = amended
        key = o.client_order_id
        if key is not None and key in self.order_keys:
            # what a repeat of its key is compared with: the order as it is now (as the
            # keys read back from its stored row after a restart say)
            self.order_keys[key] = (order_id, (
                o.symbol, o.side, o.type, qty, price, o.tp_price, o.sl_price,
                o.reservation_id, trigger_price, o.time_in_force, o.expire_at))
        self.reserved_for_orders += delta
        return Outcome(amended, [self._event(
            OrderAmended, now, cause or order_id, order=amended, prev_qty=o.qty,
            prev_price=o.price, prev_trigger_price=o.trigger_price,
            prev_reserved=o.reserved, delta=delta)])
