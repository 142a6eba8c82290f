"""`AmendFlow`: `order.amend` on the trading side (actors/model/amend.py says what may
change and how its capital follows).

The new terms are checked as `order.submit` checks them (places, the trigger and price
each type needs, the take-profit / stop-loss on their sides) and the new reservation is
computed by the same formulas, for what is left of the order. Then the account's manager
books the amend on the ledger and, once the ledger took it (capital re-reserved,
persisted), applies it at the broker -- on its own thread, so no fill of the broker can
come between the two. An order without a broker is amended on the ledger alone.

A mixin of `actors.trading.Trading`, which is the only class that inherits it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from capflow.actors.account_messages import Amend
from capflow.actors.model import messages as m
from capflow.actors.model.amend import (
    AmendOrder,
    Pricing,
    check_amendable,
    check_qty,
    reservation_for,
)
from capflow.actors.model.errors import InvalidArgument, NotFound
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.order_types import check_order_fields
from capflow.actors.model.orders import check_protection


class AmendFlow:
    def amend_order(self, profile_id: str, order_id: str, *, qty: Any = None,
                    price: Any = None, trigger_price: Any = None) -> m.OrderCapital:
        """Blocking: amend a working order's `qty`, `price` and / or `trigger_price` (the
        ones given); answered with the order as amended once it is stored and the broker
        has it."""
        if qty is None and price is None and trigger_price is None:
            raise InvalidArgument("qty", "give qty, price or trigger_price to change")
        o = self._store().get_order(profile_id, order_id)
        if o is None:
            raise NotFound("order", order_id)
        q = o.qty if qty is None else parse_decimal(qty, "qty")
        px = o.price if price is None else parse_decimal(price, "price")
        trig = o.trigger_price if trigger_price is None else parse_decimal(
            trigger_price, "trigger_price")
        check_amendable(o, trig != o.trigger_price)
        check_qty(o, q)
        check_order_fields(o.type, px, trig)
        reference = trig if o.type == "STOP" else px
        check_protection(o.side, reference, o.tp_price, o.sl_price)
        price_places, qty_places = self._places(o.symbol, reference)
        for name, value, places in (("qty", q, qty_places), ("price", px, price_places),
                                    ("trigger_price", trig, price_places)):
            if value is not None and value != value.quantize(Decimal(1).scaleb(-places)):
                raise InvalidArgument(name, f"{name} has more than {places} decimal places "
                                            f"for {o.symbol}")
        tick = self.board.get(o.symbol)
        taker, maker = ((Decimal(0), Decimal(0)) if o.account_id is None
                        else self._fees(o.account_id))
        money = self.accounts.places(o.account_id or self.accounts.account_for(profile_id))
        amount, cap = reservation_for(o.type, o.side, q - o.filled_qty, px, reference, trig,
                                      Pricing(bid=tick and tick.bid, ask=tick and tick.ask,
                                              buffer_pct=self.config.oms.reserve_buffer_pct,
                                              taker_fee=taker, maker_fee=maker,
                                              places=money, price_places=price_places))
        cmd = AmendOrder(order_id=order_id, qty=q, price=px, trigger_price=trig,
                         amount=amount, max_price=cap, filled_qty=o.filled_qty,
                         cause=f"amend:{order_id}")
        if o.account_id is None:
            return self._call(profile_id, cmd).result
        return self.accounts.ask(o.account_id, Amend(profile_id, cmd))
