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

from capflow.actors.account_messages import Amend, Reduce
from capflow.actors.model import messages as m
from capflow.actors.model.amend import (
    AmendOrder,
    Pricing,
    check_amendable,
    check_qty,
    reservation_for,
)
from capflow.actors.model.errors import Denial, InvalidArgument, NotFound
from capflow.actors.model.money import parse_decimal, round_down
from capflow.actors.model.order_types import check_order_fields
from capflow.actors.model.orders import check_protection
from capflow.actors.model.venue import qty_down


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

    def reduce_position(self, profile_id: str, position_id: str, *, qty: Any = None,
                        fraction: Any = None) -> tuple[m.PositionCapital, Decimal, bool]:
        """Blocking: exit `qty` of an open position, or `fraction` of it (0 < f <= 1), at
        market; rounded down to the lot step; all that is open (f = 1) is a close.
        Answers (the position as asked, the quantity asked, whether it is a close);
        the exit is booked when it fills (the next tick for the paper broker)."""
        if (qty is None) == (fraction is None):
            raise InvalidArgument("qty", "give qty or fraction (one of them)")
        p = self.open_at_broker(profile_id, position_id, "reduce it with an exit fill",
                                closing=True)
        if fraction is not None:
            f = parse_decimal(fraction, "fraction")
            if f > 1:
                raise InvalidArgument("fraction", "fraction must be above 0 and at most 1")
            wanted, field = p.qty_open * f, "fraction"
        else:
            wanted, field = parse_decimal(qty, "qty"), "qty"
            if wanted > p.qty_open:
                raise InvalidArgument("qty", f"qty {wanted} is more than the {p.qty_open} "
                                             f"open")
        if wanted == p.qty_open:
            return self.close_position(profile_id, position_id, "manual"), wanted, True
        rules = self.accounts.venue_rules(p.account_id)
        rule = None if rules is None else rules.rule(p.symbol)
        if rule is not None and not isinstance(rule, Denial):
            q = qty_down(wanted, rule)
            # the venue takes no order below its minimum: neither this exit nor, later,
            # one of what it would leave open
            if 0 < q < rule.min_qty or 0 < p.qty_open - q < rule.min_qty:
                raise InvalidArgument(field, f"{q} of {p.symbol}, or the {p.qty_open - q} "
                                             f"it leaves open, is below the venue's "
                                             f"minimum quantity {rule.min_qty}")
        else:
            q = round_down(wanted, self._places(p.symbol, p.entry_price or p.exit_price)[1])
        if q <= 0:
            raise InvalidArgument(field, f"{wanted} of {p.symbol} is below one lot step")
        q = q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()
        self.accounts.ask(p.account_id, Reduce(profile_id, position_id, q))
        return p, q, False
