"""The trading half of a profile's ledger: order capital, entry and exit fills, closes
(a mixin of `Ledger`; signals are `ledger_signals`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from msgspec.structs import replace

from capflow.actors.model.errors import Conflict, Denial, InvalidArgument, NotFound
from capflow.actors.model.messages import (
    ACTIVE,
    CONSUMED,
    ORDER_END_STATES,
    ORDER_OPEN_STATES,
    Event,
    Fill,
    OrderCapital,
    OrderCapitalReleased,
    OrderCapitalReserved,
    OrderFilled,
    OrderTriggered,
    PositionCapital,
    PositionClosed,
    PositionCloseRequested,
    PositionReduced,
    TradingStateChanged,
)
from capflow.actors.model.money import (
    MAX_AMOUNT,
    ZERO,
    parse_decimal,
    round_down,
    round_half_even,
    round_up,
)
from capflow.actors.model.orders import (
    CLOSE_REASONS,
    OrderSpec,
    parse_side,
    parse_symbol,
    weighted_price,
)
from capflow.actors.model.outcome import Outcome, check_text
from capflow.actors.model.protections import Close
from capflow.actors.model.risk import Proposal
from capflow.actors.model.scale_in import check_target, is_scale_in

#: how many ended orders a ledger keeps for late fills
ENDED_KEPT = 512


class LedgerTrading:
    """`Ledger`'s orders and positions: what they reserve, what their fills book."""

    # -- orders -----------------------------------------------------------------------

    def reserve_order(self, order_id: str, symbol: str, side: str, qty: object,
                      amount: object, now: datetime, reservation_id: str | None = None,
                      cause: str = "") -> Outcome | Denial:
        """Reserve capital for a bare order (no broker behind it): see `open_order`."""
        spec = OrderSpec(order_id=check_text(order_id, "order_id"), position_id=order_id,
                         symbol=parse_symbol(symbol), side=parse_side(side),
                         qty=parse_decimal(qty, "qty"), reservation_id=reservation_id)
        return self.open_order(spec, amount, now, cause)

    def open_order(self, spec: OrderSpec, amount: object, now: datetime,
                   cause: str = "", refusal: Denial | None = None,
                   last: Denial | None = None) -> Outcome | Denial:
        """Record an order and reserve `amount` for it, from its reservation (a hold)
        when it names one, else fresh. A repeated `client_order_id` with the same content
        is the first order (`reused`), with other content `Conflict`. With `refusal`
        (the account refused it before), only a repeat is answered; a new order gets
        the refusal. `last` is a denial that applies once every other check passed (a
        signal's take-profit or stop-loss that the market has crossed)."""
        # computed by the server from valid numbers (a signal's size at its price), an
        # amount can pass what a client may send (10^15): then no profile can afford it
        beyond = isinstance(amount, Decimal) and amount >= MAX_AMOUNT
        value = amount if beyond else self._amount(amount)
        key = spec.client_order_id
        if key is not None:
            prior = self.order_keys.get(key)
            if prior is not None:
                if prior[1] != spec.fingerprint():
                    raise Conflict(f"client_order_id {key!r} was used for a different order",
                                   {"client_order_id": key, "order_id": prior[0]})
                return Outcome(self.orders.get(prior[0]) or prior[0], [], reused=True)
        if spec.order_id in self.orders:
            raise Conflict(f"order {spec.order_id!r} already holds capital",
                           {"order_id": spec.order_id})
        if refusal is not None:
            return refusal
        adds = is_scale_in(spec)
        if adds:  # adds to an open position of this profile (scale_in.py)
            check_target(self.positions.get(spec.position_id), spec.position_id,
                         spec.symbol, spec.side, spec.account_id)
        if beyond:
            return self._short(value)
        price = spec.price or spec.ref_price or value / spec.qty
        if denied := self._risk_denial(Proposal(spec.symbol, spec.side, spec.qty, price,
                                                spec.sl_price, self.risk.mark(spec.symbol),
                                                new_position=not adds), now):
            return denied
        rid = spec.reservation_id
        from_reservation = ZERO
        if rid is not None:
            h = self.reservations.get(rid)
            if h is None or h.status != ACTIVE:
                raise NotFound("reservation", rid)
            if h.symbol != spec.symbol:
                raise Conflict(f"reservation {rid!r} is for {h.symbol}, not {spec.symbol}",
                               {"reservation_id": rid})
            from_reservation = h.amount
        # the hold's amount is freed first, so the check sees the net need
        if value > from_reservation and (denied := self._short(value - from_reservation)):
            return denied
        for c in self.concentration_checks(spec.symbol, value, from_reservation):
            if not c.ok:
                return Denial("RISK_REJECTED", f"{c.check}: {c.value} against the limit "
                                               f"{c.limit} (what allocation.quote allows)",
                              {"reason": c.code, "limit": c.limit, "value": c.value,
                               "check": c.check})
        if last is not None:
            return last
        consumed = None
        if rid is not None:
            consumed = self._end_reservation(rid, CONSUMED, f"order {spec.order_id}", now)
        o = OrderCapital(spec.order_id, spec.symbol, spec.side, spec.qty, ZERO, value, "OPEN",
                         rid, now, now, account_id=spec.account_id,
                         client_order_id=key, type=spec.type, price=spec.price,
                         tp_price=spec.tp_price, sl_price=spec.sl_price,
                         position_id=spec.position_id, signal_id=spec.signal_id,
                         strategy=spec.strategy, exchange=spec.exchange,
                         max_price=spec.max_price, filled_value=ZERO,
                         trigger_price=spec.trigger_price,
                         time_in_force=spec.time_in_force, expire_at=spec.expire_at,
                         trail_amount=spec.trail_amount, trail_pct=spec.trail_pct,
                         trail_activation=spec.trail_activation)
        self.orders[o.order_id] = o
        if key is not None:
            self.order_keys[key] = (o.order_id, spec.fingerprint())
        self.reserved_for_orders += value
        self.risk.bucket.take(self.risk.limits, now)
        return Outcome(o, [self._event(OrderCapitalReserved, now, cause or o.order_id,
                                       order=o, consumed=consumed)])

    def fill_entry(self, fill_id: str, order_id: str, position_id: str, qty: object,
                   price: object, fee: object, now: datetime, cause: str = "",
                   book: bool = False, fee_qty: object = 0,
                   fee_coin: tuple[object, object] | None = None) -> Outcome | Denial:
        """An order (partly) filled: its filled notional moves to the position.

        The order's reservation is released pro rata to the filled quantity (the whole
        remainder on the last fill); the filled notional at the fill price is reserved
        for the position, and the fee is booked. If the fill costs more than its share
        of the order's reservation, the difference must be available -- unless the fill
        is `book`ed (a broker reports it: it has happened), which books it anyway and
        stops new exposure if that leaves the profile short.

        With `fee_qty`, the venue kept that much of the coin bought as its fee: the
        position holds ``qty - fee_qty``, the fee booked is its value at `price` (rounded
        up), and what the fill cost in all is its notional (the fee is part of it).
        With `fee_coin` (coin, quantity), the venue charged the fee in a third coin:
        recorded on the fill; `fee` is its value in the money.
        """
        o = self.orders.get(order_id)
        late = o is None and book and order_id in self.ended_orders
        if late:  # the venue filled it after it ended here: it happened, book it
            o = self.ended_orders[order_id]
        elif o is None:
            raise NotFound("order", order_id)
        position_id = check_text(position_id, "position_id")
        q = parse_decimal(qty, "qty")
        px = parse_decimal(price, "price")
        f = self._amount(fee, "fee", zero=True)
        fq = parse_decimal(fee_qty, "fee_qty", allow_zero=True)
        remaining = o.qty - o.filled_qty
        if q > remaining:
            raise InvalidArgument("qty", f"fill of {q} exceeds the order's open {remaining}")
        if fq >= q:
            raise InvalidArgument("fee_qty", f"fee_qty {fq} is not below the fill's {q}")
        p = self.positions.get(position_id)
        if p is None and is_scale_in(o):  # never reopen a closed position's row
            raise Conflict(f"position {position_id!r} that order {order_id!r} adds to is "
                           "not open", {"position_id": position_id, "status": "CLOSED"})
        if p is not None and (p.symbol, p.side) != (o.symbol, o.side):
            raise Conflict(f"position {position_id!r} is {p.side} {p.symbol}",
                           {"position_id": position_id})
        exact = q * px
        if o.filled_value is None:  # an order of before: each fill rounds on its own
            notional, value = round_up(exact, self.places), None
        else:  # the rounded total less what the fills before booked
            value = o.filled_value + exact
            notional = (round_up(value, self.places)
                        - round_up(o.filled_value, self.places))
        if fq:  # the fee was paid in coins bought: its value is within the notional
            f = round_up(fq * px, self.places)
            cost, held, kept = notional, notional - f, q - fq
        else:
            cost, held, kept = notional + f, notional, q
        if q == remaining:
            portion = o.reserved
        else:  # its share, or what it costs when rounding makes that a little more
            portion = min(o.reserved, max(round_down(o.reserved * q / remaining, self.places),
                                          cost))
        extra = cost - portion
        if extra > 0 and not book and (denied := self._short(extra)):
            return denied
        filled = o.filled_qty + q
        left = o.reserved - portion
        status = "FILLED" if filled == o.qty else "PARTIALLY_FILLED"
        if late:  # it stays ended (its capital went back then: the fill costs anew)
            status = o.status
        o = replace(o, filled_qty=filled, reserved=left, status=status, updated_at=now,
                    avg_price=weighted_price(o.avg_price, o.filled_qty, px, q),
                    filled_value=value)
        if late:
            self.ended_orders[order_id] = o
        elif status == "FILLED":
            self.orders.pop(order_id)
        else:
            self.orders[order_id] = o
        opened = p is None
        if opened:
            zero = notional * 0  # with the currency's places
            p = PositionCapital(position_id, o.symbol, o.side, kept, kept, held, held,
                                zero, f, "OPEN", now, account_id=o.account_id,
                                order_id=o.order_id, tp_price=o.tp_price,
                                sl_price=o.sl_price, strategy=o.strategy,
                                exchange=o.exchange, entry_price=px, exit_notional=zero,
                                trail_amount=o.trail_amount, trail_pct=o.trail_pct,
                                trail_activation=o.trail_activation)
        else:
            p = replace(p, qty_open=p.qty_open + kept, qty_total=p.qty_total + kept,
                        tp_price=p.tp_price if o.tp_price is None else o.tp_price,
                        sl_price=p.sl_price if o.sl_price is None else o.sl_price,
                        entry_notional=p.entry_notional + held,
                        reserved=p.reserved + held, fees=p.fees + f,
                        entry_price=weighted_price(p.entry_price, p.qty_total, px, kept))
        self.positions[position_id] = p
        self.reserved_for_orders -= portion
        self.reserved_for_positions += held
        self.fees += f
        fill = Fill(fill_id, order_id, position_id, "ENTRY", o.symbol, o.side, q, px,
                    notional, f, ZERO, now, *_fee_coin(fee_coin))
        events: list[Event] = [self._event(OrderFilled, now, cause or fill_id, fill=fill,
                                           order=o, position=p, released=portion,
                                           position_opened=opened,
                                           while_blocked=self.entries_blocked())]
        events += self._stop_if_short(now, fill_id)
        self._observe(now)
        return Outcome(fill, events)

    def end_order(self, order_id: str, status: str, now: datetime,
                  cause: str = "", reason: str | None = None) -> Outcome:
        """Cancel, reject or expire an order's unfilled remainder: release its capital.
        `reason` (the broker's, e.g. ``expired`` or ``ioc_remainder``) is kept with it."""
        if status not in ORDER_END_STATES:
            raise InvalidArgument("status", f"status must be one of {sorted(ORDER_END_STATES)}")
        o = self.orders.get(order_id)
        if o is None or o.status not in ORDER_OPEN_STATES:
            raise NotFound("order", order_id)
        amount = o.reserved
        o = replace(o, reserved=ZERO, status=status, updated_at=now,
                    end_reason=None if reason is None else reason[:160])
        del self.orders[order_id]
        self.keep_ended(o)
        self.reserved_for_orders -= amount
        return Outcome(o, [self._event(OrderCapitalReleased, now, cause or order_id, order=o,
                                       amount=amount)])

    def trigger_order(self, order_id: str, price: Decimal, now: datetime,
                      cause: str = "") -> Outcome:
        """Record that a stop order's trigger was touched (its capital is unchanged: it
        was reserved for the worst the triggered order may cost). Once only; an order
        that ended meanwhile is left as it is."""
        o = self.orders.get(order_id)
        if o is None or o.triggered_at is not None:
            return Outcome(o, [], reused=True)
        o = replace(o, triggered_at=now, updated_at=now)
        self.orders[order_id] = o
        return Outcome(o, [self._event(OrderTriggered, now, cause or order_id, order=o,
                                       price=price)])

    def keep_ended(self, o: OrderCapital) -> None:
        """Keep an ended order for the fills a venue may still report (the most recent
        `ENDED_KEPT` of them; after a restart, those its actor reads back from storage
        when a venue's fill names one)."""
        ended = self.ended_orders
        ended[o.order_id] = o
        while len(ended) > ENDED_KEPT:
            del ended[next(iter(ended))]

    # -- exits ------------------------------------------------------------------------

    def request_close(self, position_id: str, reason: str, now: datetime,
                      cause: str = "") -> Outcome:
        """Record that an open position is to be closed, before the broker is asked, so
        that a restart before the exit fills asks again. Asking again changes nothing."""
        p = self.positions.get(position_id)
        if p is None:
            raise Conflict(f"position {position_id!r} is not open",
                           {"position_id": position_id, "status": "CLOSED"})
        if p.close_requested is not None:
            return Outcome(p, [], reused=True)
        p = replace(p, close_requested=reason)
        self.positions[position_id] = p
        return Outcome(p, [self._event(PositionCloseRequested, now, cause or position_id,
                                       position=p)])

    def fill_exit(self, fill_id: str, position_id: str, qty: object, price: object,
                  fee: object, now: datetime, cause: str = "",
                  reason: str | None = None,
                  fee_coin: tuple[object, object] | None = None) -> Outcome:
        """A position (partly) closed: release its reservation pro rata, book PnL and fee.

        An exit reduces risk, so it is never denied. PnL is measured against the cost
        basis released (``proceeds - released`` long, ``released - proceeds`` short), so
        the realized PnL of a closed position is exactly exit proceeds minus entry cost.
        """
        p = self.positions.get(position_id)
        if p is None:
            raise NotFound("position", position_id)
        q = parse_decimal(qty, "qty")
        px = parse_decimal(price, "price")
        f = self._amount(fee, "fee", zero=True)
        if q > p.qty_open:
            raise InvalidArgument("qty", f"exit of {q} exceeds the open {p.qty_open}")
        released = p.reserved if q == p.qty_open else round_down(p.reserved * q / p.qty_open,
                                                                  self.places)
        proceeds = round_half_even(q * px, self.places)
        pnl = proceeds - released if p.side == "BUY" else released - proceeds
        if reason is not None and reason not in CLOSE_REASONS:
            raise InvalidArgument("reason", f"reason must be one of {list(CLOSE_REASONS)}")
        left = p.qty_open - q
        closed_qty = p.qty_total - p.qty_open
        p = replace(p, qty_open=left, reserved=p.reserved - released,
                    realized_pnl=p.realized_pnl + pnl, fees=p.fees + f,
                    status="OPEN" if left else "CLOSED", closed_at=None if left else now,
                    exit_notional=p.exit_notional + proceeds,
                    exit_price=weighted_price(p.exit_price, closed_qty, px, q),
                    close_reason=reason or p.close_reason)
        self.reserved_for_positions -= released
        self.realized_pnl += pnl
        self.fees += f
        fill = Fill(fill_id, None, position_id, "EXIT", p.symbol,
                    "SELL" if p.side == "BUY" else "BUY", q, px, proceeds, f, pnl, now,
                    *_fee_coin(fee_coin))
        events: list[Event] = [self._event(PositionReduced, now, cause or fill_id, fill=fill,
                                           position=p, released=released)]
        if left:
            self.positions[position_id] = p
        else:
            del self.positions[position_id]
            if self.risk.protected:  # what the protections read
                self.closes.append(Close(p.symbol, now, p.close_reason))
            events.append(self._event(PositionClosed, now, cause or fill_id, position=p))
        events += self._stop_if_short(now, fill_id)
        self._observe(now)
        return Outcome(fill, events)

    def _stop_if_short(self, now: datetime, cause: str) -> list[Event]:
        """A booked fill left the profile short (a loss beyond a position's reservation,
        an entry filled far above its reserved price): stop new exposure until a human
        looks."""
        if self.available >= 0 or self.state != "ACTIVE":
            return []
        self.state = "REDUCE_ONLY"
        return [self._event(TradingStateChanged, now, cause, state="REDUCE_ONLY",
                            reason="NEGATIVE_AVAILABLE", changed_by="ledger")]


def _fee_coin(fee_coin: tuple[object, object] | None) -> tuple[str | None, Decimal | None]:
    """(coin, quantity) of a fee charged in a third coin, checked; (None, None) without."""
    if fee_coin is None or fee_coin[0] is None:
        return None, None
    return (check_text(fee_coin[0], "fee_coin"),
            parse_decimal(fee_coin[1], "fee_coin_qty", allow_zero=True))
