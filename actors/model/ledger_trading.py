"""The trading half of a profile's ledger: order capital, signals, entry and exit fills,
closes (a mixin of `Ledger`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

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
    SignalRecord,
    SignalRecorded,
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
    Signal,
    SignalPolicy,
    entry_reference,
    max_fill_price,
    order_reservation,
    parse_side,
    parse_symbol,
    protective_crossed,
    protective_prices,
    size_signal,
    weighted_price,
)
from capflow.actors.model.outcome import Outcome, check_text
from capflow.actors.model.protections import Close
from capflow.actors.model.risk import Check, Proposal
from capflow.actors.model.sizing import Shrink, shrink
from capflow.actors.model.venue import apply_rule, price_to_tick

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
        if beyond:
            return self._short(value)
        price = spec.price or spec.ref_price or value / spec.qty
        if denied := self._risk_denial(Proposal(spec.symbol, spec.side, spec.qty, price,
                                                spec.sl_price, self.risk.mark(spec.symbol)),
                                       now):
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
                         time_in_force=spec.time_in_force, expire_at=spec.expire_at)
        self.orders[o.order_id] = o
        if key is not None:
            self.order_keys[key] = (o.order_id, spec.fingerprint())
        self.reserved_for_orders += value
        self.risk.bucket.take(self.risk.limits, now)
        return Outcome(o, [self._event(OrderCapitalReserved, now, cause or o.order_id,
                                       order=o, consumed=consumed)])

    def submit_signal(self, signal: Signal, policy: SignalPolicy, now: datetime,
                      cause: str = "") -> Outcome:
        """Size a signal, check it, and open its order. A signal is always answered: a
        failed check is a `SignalRecord` with ``risk_ok = False`` and the reason, not an
        error. A repeated `signal_id` answers what the first one got."""
        sid = signal.signal_id
        if sid is not None:
            prior = self.signals.get(sid)
            if prior is not None:
                if prior.fingerprint != signal.fingerprint():
                    raise Conflict(f"signal_id {sid!r} was used for a different signal",
                                   {"signal_id": sid})
                return Outcome(prior, [], reused=True)
        tp, sl, qty = self._size(signal, policy)
        reason: str | None = None
        events: list[Event] = []
        detail: dict[str, Any] = {}
        if policy.blocked is None:
            qty, shrunk = self._shrink(signal, policy, qty, sl, now)
            if shrunk is not None:
                detail["sizing"] = shrunk.to_map()
        if policy.blocked is not None:
            reason = policy.blocked
        elif qty <= 0 and policy.venue is None:
            reason = "MIN_NOTIONAL"
        elif policy.venue is not None and isinstance(
                venue := apply_rule(signal.side, qty, None, self._reference(signal, policy),
                                    policy.venue), Denial):
            reason = venue.details["reason"]
        else:
            amount, cap = self._entry_capital(signal, policy, qty)
            spec = OrderSpec(order_id=policy.order_id, position_id=policy.position_id,
                             symbol=signal.symbol, side=signal.side, qty=qty,
                             price=signal.price, tp_price=tp, sl_price=sl,
                             client_order_id=None if sid is None else f"signal:{sid}",
                             account_id=policy.account_id, signal_id=sid,
                             strategy=signal.strategy, exchange=signal.exchange,
                             max_price=cap, time_in_force=signal.time_in_force,
                             expire_at=signal.expire_at)
            crossed = protective_crossed(signal.side, tp, sl, policy.bid, policy.ask)
            opened = self.open_order(spec, amount, now, cause or sid or policy.order_id,
                                     last=None if crossed is None else Denial(
                                         "RISK_REJECTED", f"the market has already crossed "
                                         f"the {crossed}",
                                         {"reason": "TP_SL_CROSSED"}))
            if isinstance(opened, Denial):
                reason = opened.details.get("reason") or opened.code
                if "until" in opened.details:
                    detail["risk_details"] = opened.details
            else:
                events = opened.events
        ok = reason is None
        record = SignalRecord(sid or "", signal.fingerprint(), ok, reason,
                              policy.order_id if ok else None,
                              policy.position_id if ok else None, signal.symbol, signal.side,
                              qty if ok else None, tp if ok else None, sl if ok else None, now)
        if sid is not None:
            self.signals[sid] = record
            events.append(self._event(SignalRecorded, now, cause or sid, signal=record))
        return Outcome(record, events, detail=detail or None)

    def _entry_capital(self, signal: Signal, policy: SignalPolicy,
                       qty: Decimal) -> tuple[Decimal, Decimal]:
        """(amount, max_price) of a signal's market entry: reserved at the worse of the
        signal's price and the market's, plus the slippage buffer and the taker fee; the
        broker may not fill it above `max_price`, so it never costs more than that."""
        ref = self._reference(signal, policy)
        amount = order_reservation(qty, ref, policy.reserve_buffer_pct, policy.taker_fee,
                                   self.places)
        cap = max_fill_price(qty, ref, policy.reserve_buffer_pct, policy.taker_fee, amount,
                             policy.price_places, self.places)
        if policy.venue is not None:  # the limit the venue is sent: on its tick, never up
            cap = price_to_tick("BUY", cap, policy.venue)
        return amount, cap

    @staticmethod
    def _reference(signal: Signal, policy: SignalPolicy) -> Decimal:
        return entry_reference(signal.side, signal.price, policy.bid, policy.ask)

    def _size(self, signal: Signal, policy: SignalPolicy) -> tuple[Decimal, Decimal, Decimal]:
        """(tp_price, sl_price, qty) of a signal."""
        tp_pct = policy.tp_pct if signal.tp_pct is None else signal.tp_pct
        sl_pct = policy.sl_pct if signal.sl_pct is None else signal.sl_pct
        tp, sl = protective_prices(signal.side, signal.price, tp_pct, sl_pct,
                                   policy.price_places)
        equity = self.allocated + self.realized_pnl - self.fees
        return tp, sl, size_signal(signal, policy, equity, sl)

    def _shrink(self, signal: Signal, policy: SignalPolicy, qty: Decimal, sl: Decimal,
                now: datetime) -> tuple[Decimal, Shrink | None]:
        """The entry's quantity under its sizing policy (actors/model/sizing.py)."""
        def failing(q: Decimal) -> list[Check]:
            amount = self._entry_capital(signal, policy, q)[0]
            prop = Proposal(signal.symbol, signal.side, q, signal.price, sl,
                            self.risk.mark(signal.symbol))
            return [c for c in self.what_if(prop, amount, now) if not c.ok]

        return shrink(qty, signal, policy, self.risk.limits, failing,
                      self._reference(signal, policy))

    def what_if_signal(self, signal: Signal, policy: SignalPolicy,
                       now: datetime) -> dict[str, Any]:
        """`risk.check`: size `signal` as `submit_signal` would and run every check on
        the order it would make. Changes nothing."""
        tp, sl, qty = self._size(signal, policy)
        qty, shrunk = self._shrink(signal, policy, qty, sl, now)
        amount = (self._entry_capital(signal, policy, qty)[0] if qty > 0 else
                  order_reservation(qty, signal.price, policy.reserve_buffer_pct,
                                    policy.taker_fee, self.places))
        checks = self.what_if(Proposal(signal.symbol, signal.side, qty, signal.price, sl,
                                       self.risk.mark(signal.symbol)), amount, now)
        exit_price = policy.bid if signal.side == "BUY" else policy.ask
        if exit_price is not None:  # with a market: its TP / SL must not be crossed yet
            crossed = protective_crossed(signal.side, tp, sl, policy.bid, policy.ask)
            checks.append(Check("protection", "TP_SL_CROSSED", crossed is None, exit_price,
                                {"tp_price": tp, "sl_price": sl}))
        if policy.venue is not None:
            venue = apply_rule(signal.side, qty, None, self._reference(signal, policy),
                               policy.venue)
            if isinstance(venue, Denial):
                checks.insert(0, Check("venue", venue.details["reason"], False,
                                       venue.details["limit"], venue.details["value"]))
        elif qty <= 0:
            checks.insert(0, Check("quantity", "MIN_NOTIONAL", False, "> 0", qty))
        out = {"symbol": signal.symbol, "side": signal.side, "qty": qty,
               "price": signal.price, "notional": qty * signal.price, "amount": amount,
               "tp_price": tp, "sl_price": sl, "checks": checks}
        if shrunk is not None:
            out["sizing"] = shrunk.to_map()
        return out

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
                                exchange=o.exchange, entry_price=px, exit_notional=zero)
        else:
            p = replace(p, qty_open=p.qty_open + kept, qty_total=p.qty_total + kept,
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
