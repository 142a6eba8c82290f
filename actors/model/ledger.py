"""One profile's capital ledger, pure: `Ledger` and the views it answers with.

Buckets (docs/ledger.md)::

    available = allocated + realized_pnl - fees - held
                - reserved_for_orders - reserved_for_positions

`Ledger` is plain synchronous Python: every operation validates, then either returns a
`Denial` (and changes nothing) or applies the change and returns an `Outcome` with the
events that describe it. Invalid input raises `InvalidArgument` / `NotFound` /
`Conflict` before anything changes, so an operation is all or nothing. Its actor is
`capflow.actors.ledger_actor.LedgerActor`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from msgspec.structs import replace

from capflow.actors.model import messages as m
from capflow.actors.model.allocation import (
    CapitalPicture,
    Decision,
    concentration_limits,
    exposure_by_symbol,
)
from capflow.actors.model.errors import (
    Conflict,
    Denial,
    InvalidArgument,
    NotFound,
)
from capflow.actors.model.messages import (
    ACTIVE,
    CONSUMED,
    EXPIRED,
    ORDER_END_STATES,
    ORDER_OPEN_STATES,
    RELEASED,
    TRADING_STATES,
    Buckets,
    CapitalDeposited,
    CapitalReserved,
    CapitalWithdrawn,
    Event,
    Fill,
    OrderCapital,
    OrderCapitalReleased,
    OrderCapitalReserved,
    OrderFilled,
    PositionCapital,
    PositionClosed,
    PositionCloseRequested,
    PositionReduced,
    Reservation,
    ReservationExpired,
    ReservationReleased,
    SignalRecord,
    SignalRecorded,
    TradingStateChanged,
    Transfer,
)
from capflow.actors.model.money import (
    MAX_AMOUNT,
    ZERO,
    parse_decimal,
    quant,
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
from capflow.actors.model.risk import (
    BREAKERS,
    EMPTY_BOOK,
    Book,
    BreakerState,
    Check,
    Proposal,
    RiskGate,
    breaker_figures,
    limits_map,
    observe,
    run_checks,
)

#: idempotency keys with this prefix are capflow's own and refused from clients
RESERVED_KEY_PREFIX = "capflow:"


#: the key of the transfer that holds a profile's allocation at creation
INITIAL_ALLOCATION_KEY = "capflow:profile.create"


class Outcome(msgspec.Struct):
    """What an accepted operation produced: its result and the events to persist."""

    result: Any
    events: list[Event]
    reused: bool = False


def _text(value: object, field: str, max_len: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidArgument(field, f"{field} must be a non-empty string of at most "
                                     f"{max_len} characters")
    return value


def _client_key(value: object) -> str:
    key = _text(value, "client_request_id")
    if key.startswith(RESERVED_KEY_PREFIX):
        raise InvalidArgument("client_request_id", f"client_request_id may not start with "
                                                   f"{RESERVED_KEY_PREFIX!r}")
    return key


class Ledger:
    """The capital of one trading profile. Not thread-safe: one owner (its actor)."""

    def __init__(self, profile_id: str, currency: str, places: int, *,
                 buckets: Buckets | None = None, seq: int = 0, state: str = "ACTIVE",
                 reservations: Iterable[Reservation] = (), orders: Iterable[OrderCapital] = (),
                 positions: Iterable[PositionCapital] = (),
                 transfers: Iterable[Transfer] = (),
                 order_keys: dict[str, tuple[str, tuple]] | None = None,
                 signals: Iterable[SignalRecord] = (),
                 breakers: BreakerState | None = None):
        self.profile_id = profile_id
        self.currency = currency
        self.places = places
        zero = ZERO.quantize(quant(places))
        b = buckets or Buckets(zero, zero, zero, zero, zero, zero)
        self.allocated = b.allocated
        self.realized_pnl = b.realized_pnl
        self.fees = b.fees
        self.seq = seq
        self.state = state
        #: every reservation by id; the active ones make up `held`
        self.reservations: dict[str, Reservation] = {}
        self._hold_keys: dict[str, str] = {}
        #: active reservations per symbol (what the concentration limits count)
        self.held_by_symbol: dict[str, Decimal] = {}
        self._expiry: list[tuple[datetime, str]] = []
        for h in reservations:
            self._index_reservation(h)
        self.orders: dict[str, OrderCapital] = {o.order_id: o for o in orders}
        self.positions: dict[str, PositionCapital] = {p.position_id: p for p in positions}
        self.transfers: dict[str, Transfer] = {t.client_request_id: t for t in transfers}
        #: client_order_id -> (order_id, fingerprint) of every order with a client key
        self.order_keys: dict[str, tuple[str, tuple]] = dict(order_keys or {})
        self.signals: dict[str, SignalRecord] = {r.signal_id: r for r in signals}
        self.held = sum((h.amount for h in self.reservations.values() if h.status == ACTIVE), zero)
        self.reserved_for_orders = sum((o.reserved for o in self.orders.values()), zero)
        self.reserved_for_positions = sum((p.reserved for p in self.positions.values()), zero)
        #: limits, breakers, order bucket (the actor sets the limits when it loads)
        self.risk = RiskGate(breakers=breakers)
        #: breaker events made while checking an entry that was then denied: the actor
        #: persists them anyway (`take_risk_events`)
        self._risk_events: list[Event] = []

    # -- views ------------------------------------------------------------------------

    @property
    def available(self) -> Decimal:
        return (self.allocated + self.realized_pnl - self.fees - self.held
                - self.reserved_for_orders - self.reserved_for_positions)

    def buckets(self) -> Buckets:
        return Buckets(self.allocated, self.held, self.reserved_for_orders,
                       self.reserved_for_positions, self.realized_pnl, self.fees)

    def next_expiry(self) -> datetime | None:
        while self._expiry:
            when, rid = self._expiry[0]
            if self.reservations[rid].status == ACTIVE:
                return when
            heapq.heappop(self._expiry)
        return None

    def violations(self) -> list[str]:
        """Every broken invariant, as text; empty when the ledger is sound."""
        out = []
        for name in ("allocated", "held", "reserved_for_orders", "reserved_for_positions",
                     "fees"):
            if getattr(self, name) < 0:
                out.append(f"{name} is negative: {getattr(self, name)}")
        if self.available < 0:
            out.append(f"available is negative: {self.available}")
        active = sum((h.amount for h in self.reservations.values() if h.status == ACTIVE), ZERO)
        if active != self.held:
            out.append(f"held {self.held} != sum of active reservations {active}")
        orders = sum((o.reserved for o in self.orders.values()), ZERO)
        if orders != self.reserved_for_orders:
            out.append(f"reserved_for_orders {self.reserved_for_orders} != open orders {orders}")
        positions = sum((p.reserved for p in self.positions.values()), ZERO)
        if positions != self.reserved_for_positions:
            out.append(f"reserved_for_positions {self.reserved_for_positions} "
                       f"!= open positions {positions}")
        for o in self.orders.values():
            if o.reserved < 0 or o.filled_qty > o.qty:
                out.append(f"order {o.order_id} is inconsistent: {o}")
        for p in self.positions.values():
            if p.reserved < 0 or p.qty_open <= 0:
                out.append(f"position {p.position_id} is inconsistent: {p}")
        return out

    # -- helpers ----------------------------------------------------------------------

    def _amount(self, value: object, field: str = "amount", *, zero: bool = False) -> Decimal:
        return parse_decimal(value, field, allow_zero=zero, places=self.places)

    def _event(self, cls: type[Event], now: datetime, cause: str, **fields: Any) -> Event:
        self.seq += 1
        return cls(profile_id=self.profile_id, seq=self.seq, ts=now, causation_id=cause,
                   **fields)

    def _short(self, requested: Decimal) -> Denial | None:
        available = self.available
        if requested > available:
            return Denial("INSUFFICIENT_CAPITAL",
                          f"requested {requested} {self.currency}, available {available}",
                          {"available": available, "requested": requested})
        return None

    def _entries_blocked(self, now: datetime, book: Book | None = None) -> Denial | None:
        """The trading state (the profile's, or the global kill switch) and the drawdown
        breakers: what stops any new exposure, whatever its size."""
        state, scope = self.risk.effective(self.state)
        if state != "ACTIVE":
            reason = "TRADING_HALTED" if state == "HALTED" else "REDUCE_ONLY"
            g = self.risk.scope_state(scope)
            what = "global kill switch" if scope == "global" else "broker account"
            why = f" ({what} by {g.changed_by}: {g.reason})" if g else ""
            return Denial("RISK_REJECTED", f"profile is {state}{why}: no new exposure",
                          {"reason": reason, "limit": "ACTIVE", "value": state,
                           "scope": scope})
        self._observe(now, book)
        for trip in self.risk.breakers.trips.values():
            until = f" until {trip.until.isoformat()}" if trip.until else " until reset"
            return Denial("RISK_REJECTED", f"{trip.code}: loss {trip.loss_pct}% reached the "
                                           f"limit {trip.limit_pct}%; entries are blocked"
                                           + until,
                          {"reason": trip.code, "limit": trip.limit_pct,
                           "value": trip.loss_pct, "until": trip.until})
        return None

    # -- risk -------------------------------------------------------------------------

    def book(self, marks: dict[str, Decimal] | None = None) -> Book:
        """Equity (unrealized PnL at the market's last price), open position count per
        symbol (entry orders count: they will open one) and total open notional."""
        mark = self.risk.mark
        if marks:
            live = mark

            def mark(symbol: str) -> Decimal | None:
                return marks.get(symbol) or live(symbol)
        unrealized = ZERO
        exposure = ZERO
        ids: dict[str, set[str]] = {}
        for p in self.positions.values():
            px = mark(p.symbol) or p.entry_price or p.entry_notional / p.qty_total
            value = p.qty_open * px
            unrealized += value - p.reserved if p.side == "BUY" else p.reserved - value
            exposure += value
            ids.setdefault(p.symbol, set()).add(p.position_id)
        for o in self.orders.values():
            # a working order at its notional (its reservation adds buffer and fee)
            exposure += (o.qty - o.filled_qty) * o.price if o.price else o.reserved
            ids.setdefault(o.symbol, set()).add(o.position_id or o.order_id)
        equity = self.allocated + self.realized_pnl - self.fees + unrealized
        return Book(equity, {s: len(v) for s, v in ids.items()}, exposure)

    def _observe(self, now: datetime, book: Book | None = None,
                 tick_ts: datetime | None = None) -> None:
        """Run the breakers at the current equity (of `book` when the caller has it); a
        trip or reset becomes an event."""
        r = self.risk
        if not r.has_breakers and not r.breakers.trips:
            return
        equity = (self.book() if book is None else book).equity
        r.breakers, tripped, reset = observe(r.breakers, r.limits, equity, now, r.tz)
        for t in reset:
            self._risk_events.append(self._event(m.BreakerReset, now, "period", trip=t,
                                                 reset_by="period", reason="period ended"))
        for t in tripped:
            self._risk_events.append(self._event(m.BreakerTripped, now, t.code, trip=t,
                                                 tick_ts=tick_ts))

    def risk_view(self, now: datetime) -> dict[str, Any]:
        """Limits, equity, the high-water mark and every breaker, as an answer map."""
        r = self.risk
        book = self.book()
        breakers = {}
        for kind, (loss, limit, trip) in breaker_figures(r.breakers, r.limits, book.equity,
                                                         now, r.tz).items():
            breakers[kind] = {"code": BREAKERS[kind][1], "loss_pct": loss,
                              "limit_pct": limit, "tripped": trip is not None,
                              "tripped_at": trip.at if trip else None,
                              "until": trip.until if trip else None}
        return {"limits": limits_map(r.limits), "equity": book.equity,
                "exposure": book.exposure, "open_positions": sum(book.open_by_symbol.values()),
                "high_water_mark": r.breakers.hwm, "breakers": breakers}

    def observe(self, now: datetime, marks: dict[str, Decimal] | None = None,
                tick_ts: datetime | None = None) -> Book | None:
        """Run the breakers now (the actor does at each period's end, and on the price
        ticks of the symbols it holds, with those `marks`: risk marked to market, a trip
        then carrying the tick's time). The book it valued, when it needed one."""
        if not self.risk.has_breakers and not self.risk.breakers.trips:
            return None
        book = self.book(marks)
        self._observe(now, book, tick_ts)
        return book

    def entries_blocked(self) -> str | None:
        """Why no new exposure may be added now (a trading state other than ACTIVE, the
        profile's, its account's or the global one; a tripped breaker), or None."""
        state, scope = self.risk.effective(self.state)
        if state != "ACTIVE":
            return state if scope == "profile" else f"{state} ({scope})"
        for trip in self.risk.breakers.trips.values():
            return trip.code
        return None

    def next_wakeup(self) -> datetime | None:
        """When the actor must act by itself next: a reservation expires, or a loss
        period ends (its baseline is then taken at the equity of that moment)."""
        nxt = self.next_expiry()
        if self.risk.has_breakers:
            for p in self.risk.breakers.periods.values():
                if nxt is None or p.end < nxt:
                    nxt = p.end
        return nxt

    def take_risk_events(self) -> list[Event]:
        out, self._risk_events = self._risk_events, []
        return out

    def checks(self, prop: Proposal, now: datetime, book: Book | None = None) -> list[Check]:
        """Every pre-trade check of `prop` now. Reads only: the breakers are evaluated
        on a copy of their state."""
        r = self.risk
        state, scope = r.effective(self.state)
        if book is None:
            book = self.book() if r.needs_book or r.account_room else EMPTY_BOOK
        figures = breaker_figures(r.breakers, r.limits, book.equity, now, r.tz
                                  ) if r.has_breakers or r.breakers.trips else {}
        out = list(run_checks(r.limits, prop, book, state=state, scope=scope,
                              breakers=figures, bucket_tokens=r.tokens(now)))
        if r.account_room is not None:
            # the account's profiles together: the others as they last reported, this
            # one as it is now, and this entry
            limit, others = r.account_room
            value = Decimal(others()) + book.exposure + prop.notional
            out.append(Check("account_gross_exposure", "MAX_GROSS_EXPOSURE", value <= limit,
                             limit, value, limit - value))
        return out

    def _risk_denial(self, prop: Proposal, now: datetime) -> Denial | None:
        # one walk of the book serves the breakers and the checks
        book = self.book() if self.risk.needs_book or self.risk.account_room else None
        if denied := self._entries_blocked(now, book):
            return denied
        if self.risk.unlimited and self.risk.account_room is None:
            return None
        for c in self.checks(prop, now, book):
            if not c.ok:
                return Denial("RISK_REJECTED", f"{c.check}: {c.value} against the limit "
                                               f"{c.limit}",
                              {"reason": c.code, "limit": c.limit, "value": c.value,
                               "check": c.check})
        return None

    def what_if(self, prop: Proposal, amount: Decimal, now: datetime) -> list[Check]:
        """`checks`, plus the capital the order would reserve against `available`."""
        out = self.checks(prop, now)
        available = self.available
        out.append(Check("capital", "INSUFFICIENT_CAPITAL", amount <= available, available,
                         amount, available - amount))
        out += self.concentration_checks(prop.symbol, amount)
        return out

    def concentration_checks(self, symbol: str, amount: Decimal,
                             consumed: Decimal = ZERO) -> list[Check]:
        """The allocation's concentration limits (ticker, sector, industry, area: what
        `allocation.quote` reports) for an entry reserving `amount` in `symbol`, after
        `consumed` of a reservation in `symbol` turns into it. Empty when the ledger has
        no allocation rules (a bare `Ledger`)."""
        rules = self.risk.concentration
        if rules is None:
            return []
        instruments, cfg = rules
        exposure = exposure_by_symbol(self.positions.values(), self.orders.values(),
                                      self.held_by_symbol, self.risk.mark)
        equity = self.allocated + self.realized_pnl - self.fees
        out = []
        for c in concentration_limits(equity, exposure, symbol, instruments, cfg,
                                      self.places):
            if c.key is None:
                continue
            value = c.invested - consumed + amount
            out.append(Check(f"concentration_{c.dimension}", c.code, value <= c.limit,
                             c.limit, value, c.limit - value))
        return out

    def reset_breakers(self, kinds: Iterable[str], reason: str, changed_by: str,
                       now: datetime, cause: str = "") -> Outcome:
        """Reset tripped breakers by hand; their references restart at the equity now
        (else the loss that tripped them would trip them again)."""
        kinds = tuple(kinds) or tuple(BREAKERS)
        for k in kinds:
            if k not in BREAKERS:
                raise InvalidArgument("breaker", f"breaker must be one of {list(BREAKERS)}")
        r = self.risk
        equity = self.book().equity
        trips = dict(r.breakers.trips)
        periods = dict(r.breakers.periods)
        hwm = r.breakers.hwm
        events: list[Event] = []
        for k in kinds:
            trip = trips.pop(k, None)
            if trip is None:
                continue
            if k == "max":
                hwm = equity
            elif k in periods:
                periods[k] = replace(periods[k], baseline=equity)
            events.append(self._event(m.BreakerReset, now, cause or changed_by, trip=trip,
                                      reset_by=changed_by, reason=reason or "by hand"))
        r.breakers = BreakerState(hwm, periods, trips)
        return Outcome([e.trip for e in events], events, reused=not events)

    def _index_reservation(self, h: Reservation) -> None:
        self.reservations[h.reservation_id] = h
        self._hold_keys[h.client_request_id] = h.reservation_id
        if h.status == ACTIVE:
            heapq.heappush(self._expiry, (h.expires_at, h.reservation_id))
            self.held_by_symbol[h.symbol] = self.held_by_symbol.get(h.symbol, ZERO) + h.amount

    def _end_reservation(self, rid: str, status: str, reason: str, now: datetime) -> Reservation:
        h = replace(self.reservations[rid], status=status, ended_at=now, end_reason=reason)
        self.reservations[rid] = h
        self.held -= h.amount
        left = self.held_by_symbol[h.symbol] - h.amount
        if left:
            self.held_by_symbol[h.symbol] = left
        else:
            del self.held_by_symbol[h.symbol]
        return h

    def picture(self, mark) -> CapitalPicture:
        """Capital and exposure now (`actors.allocation`); `mark(symbol)` prices
        positions at market."""
        return CapitalPicture(
            profile_id=self.profile_id, currency=self.currency, places=self.places,
            allocated=self.allocated, realized_pnl=self.realized_pnl, fees=self.fees,
            held=self.held, reserved_for_orders=self.reserved_for_orders,
            reserved_for_positions=self.reserved_for_positions, available=self.available,
            state=self.risk.effective(self.state)[0],
            exposure=exposure_by_symbol(
                self.positions.values(), self.orders.values(), self.held_by_symbol, mark))

    # -- capital movements ------------------------------------------------------------

    def deposit(self, amount: object, client_request_id: str, now: datetime,
                cause: str = "", refusal: Denial | None = None) -> Outcome | Denial:
        """With `refusal`, only a repeat of an earlier deposit is answered (reused);
        a new one gets the refusal."""
        if refusal is not None and _client_key(client_request_id) not in self.transfers:
            self._amount(amount)  # bad input is still bad input
            return refusal
        return self._transfer(self._amount(amount), client_request_id, now, cause)

    def withdraw(self, amount: object, client_request_id: str, now: datetime,
                 cause: str = "") -> Outcome | Denial:
        return self._transfer(-self._amount(amount), client_request_id, now, cause)

    def _transfer(self, signed: Decimal, key: str, now: datetime,
                  cause: str) -> Outcome | Denial:
        key = _client_key(key)
        prior = self.transfers.get(key)
        if prior is not None:
            if prior.amount != signed:
                raise Conflict(f"client_request_id {key!r} was used for a different transfer",
                               {"client_request_id": key})
            return Outcome(prior, [], reused=True)
        if signed < 0 and (denied := self._short(-signed)):
            return denied
        t = Transfer(f"{self.profile_id}:t{self.seq + 1}", key, signed, now)
        self.allocated += signed
        self.risk.breakers = self.risk.breakers.shifted(signed)
        self.transfers[key] = t
        cls = CapitalDeposited if signed > 0 else CapitalWithdrawn
        return Outcome(t, [self._event(cls, now, cause or key, transfer=t)])

    # -- reservations -------------------------------------------------------------

    def reserve(self, reservation_id: str, client_request_id: str, symbol: str, amount: object,
             ttl_s: int, now: datetime, cause: str = "",
             cap: Decision | None = None) -> Outcome | Denial:
        """Reserve `amount` for `symbol` until `ttl_s` from now. With `cap` (the
        allocation decision made just before, in the same step) the amount must fit in
        its `max_investable`, which must itself reach the minimum order notional."""
        key = _client_key(client_request_id)
        symbol = parse_symbol(symbol)
        value = self._amount(amount)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= 604800:
            raise InvalidArgument("ttl_s", "ttl_s must be a whole number of seconds in "
                                           "1..604800")
        prior_id = self._hold_keys.get(key)
        if prior_id is not None:
            prior = self.reservations[prior_id]
            if (prior.symbol, prior.amount, prior.ttl_s) != (symbol, value, ttl_s):
                raise Conflict(f"client_request_id {key!r} was used for a different "
                               "reservation", {"client_request_id": key,
                                               "reservation_id": prior_id})
            return Outcome(prior, [], reused=True)
        if (denied := self._entries_blocked(now)) or (denied := self._short(value)):
            return denied
        if cap is not None and (cap.too_small or value > cap.max_investable):
            return Denial("INSUFFICIENT_CAPITAL",
                          f"requested {value} {self.currency}, the allocation allows "
                          f"{cap.max_investable}" + (" (below the minimum order notional "
                                                     f"{cap.min_order_notional})"
                                                     if cap.too_small else ""),
                          {"available": cap.max_investable, "requested": value,
                           "decision": cap.to_map()})
        h = Reservation(reservation_id, key, symbol, value, ttl_s, now,
                 now + timedelta(seconds=ttl_s))
        self._index_reservation(h)
        self.held += value
        return Outcome(h, [self._event(CapitalReserved, now, cause or key, reservation=h)])

    def release(self, reservation_id: str, reason: str, now: datetime,
                cause: str = "") -> Outcome:
        h = self.reservations.get(reservation_id)
        if h is None or h.status != ACTIVE:
            raise NotFound("reservation", reservation_id)
        h = self._end_reservation(reservation_id, RELEASED, reason or "client", now)
        return Outcome(h, [self._event(ReservationReleased, now, cause or reservation_id,
                                       reservation=h)])

    def expire_due(self, now: datetime, cause: str = "timer") -> Outcome:
        events = []
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            if self.reservations[rid].status == ACTIVE:
                h = self._end_reservation(rid, EXPIRED, "ttl", now)
                events.append(self._event(ReservationExpired, now, cause, reservation=h))
        return Outcome([e.reservation for e in events], events)

    # -- orders -----------------------------------------------------------------------

    def reserve_order(self, order_id: str, symbol: str, side: str, qty: object,
                      amount: object, now: datetime, reservation_id: str | None = None,
                      cause: str = "") -> Outcome | Denial:
        """Reserve capital for a bare order (no broker behind it): see `open_order`."""
        spec = OrderSpec(order_id=_text(order_id, "order_id"), position_id=order_id,
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
                         max_price=spec.max_price, filled_value=ZERO)
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
        if policy.blocked is not None:
            reason = policy.blocked
        elif qty <= 0:
            reason = "MIN_NOTIONAL"
        else:
            amount, cap = self._entry_capital(signal, policy, qty)
            spec = OrderSpec(order_id=policy.order_id, position_id=policy.position_id,
                             symbol=signal.symbol, side=signal.side, qty=qty,
                             price=signal.price, tp_price=tp, sl_price=sl,
                             client_order_id=None if sid is None else f"signal:{sid}",
                             account_id=policy.account_id, signal_id=sid,
                             strategy=signal.strategy, exchange=signal.exchange,
                             max_price=cap)
            crossed = protective_crossed(signal.side, tp, sl, policy.bid, policy.ask)
            opened = self.open_order(spec, amount, now, cause or sid or policy.order_id,
                                     last=None if crossed is None else Denial(
                                         "RISK_REJECTED", f"the market has already crossed "
                                         f"the {crossed}",
                                         {"reason": "TP_SL_CROSSED"}))
            if isinstance(opened, Denial):
                reason = opened.details.get("reason") or opened.code
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
        return Outcome(record, events)

    def _entry_capital(self, signal: Signal, policy: SignalPolicy,
                       qty: Decimal) -> tuple[Decimal, Decimal]:
        """(amount, max_price) of a signal's market entry: reserved at the worse of the
        signal's price and the market's, plus the slippage buffer and the taker fee; the
        broker may not fill it above `max_price`, so it never costs more than that."""
        ref = entry_reference(signal.side, signal.price, policy.bid, policy.ask)
        amount = order_reservation(qty, ref, policy.reserve_buffer_pct, policy.taker_fee,
                                   self.places)
        cap = max_fill_price(qty, ref, policy.reserve_buffer_pct, policy.taker_fee, amount,
                             policy.price_places, self.places)
        return amount, cap

    def _size(self, signal: Signal, policy: SignalPolicy) -> tuple[Decimal, Decimal, Decimal]:
        """(tp_price, sl_price, qty) of a signal."""
        tp_pct = policy.tp_pct if signal.tp_pct is None else signal.tp_pct
        sl_pct = policy.sl_pct if signal.sl_pct is None else signal.sl_pct
        tp, sl = protective_prices(signal.side, signal.price, tp_pct, sl_pct,
                                   policy.price_places)
        equity = self.allocated + self.realized_pnl - self.fees
        return tp, sl, size_signal(signal, policy, equity, sl)

    def what_if_signal(self, signal: Signal, policy: SignalPolicy,
                       now: datetime) -> dict[str, Any]:
        """`risk.check`: size `signal` as `submit_signal` would and run every check on
        the order it would make. Changes nothing."""
        tp, sl, qty = self._size(signal, policy)
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
        if qty <= 0:
            checks.insert(0, Check("quantity", "MIN_NOTIONAL", False, "> 0", qty))
        return {"symbol": signal.symbol, "side": signal.side, "qty": qty,
                "price": signal.price, "notional": qty * signal.price, "amount": amount,
                "tp_price": tp, "sl_price": sl, "checks": checks}

    def fill_entry(self, fill_id: str, order_id: str, position_id: str, qty: object,
                   price: object, fee: object, now: datetime, cause: str = "",
                   book: bool = False) -> Outcome | Denial:
        """An order (partly) filled: its filled notional moves to the position.

        The order's reservation is released pro rata to the filled quantity (the whole
        remainder on the last fill); the filled notional at the fill price is reserved
        for the position, and the fee is booked. If the fill costs more than its share
        of the order's reservation, the difference must be available -- unless the fill
        is `book`ed (a broker reports it: it has happened), which books it anyway and
        stops new exposure if that leaves the profile short.
        """
        o = self.orders.get(order_id)
        if o is None:
            raise NotFound("order", order_id)
        position_id = _text(position_id, "position_id")
        q = parse_decimal(qty, "qty")
        px = parse_decimal(price, "price")
        f = self._amount(fee, "fee", zero=True)
        remaining = o.qty - o.filled_qty
        if q > remaining:
            raise InvalidArgument("qty", f"fill of {q} exceeds the order's open {remaining}")
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
        if q == remaining:
            portion = o.reserved
        else:  # its share, or what it costs when rounding makes that a little more
            portion = min(o.reserved, max(round_down(o.reserved * q / remaining, self.places),
                                          notional + f))
        extra = notional + f - portion
        if extra > 0 and not book and (denied := self._short(extra)):
            return denied
        filled = o.filled_qty + q
        left = o.reserved - portion
        status = "FILLED" if filled == o.qty else "PARTIALLY_FILLED"
        o = replace(o, filled_qty=filled, reserved=left, status=status, updated_at=now,
                    avg_price=weighted_price(o.avg_price, o.filled_qty, px, q),
                    filled_value=value)
        if status == "FILLED":
            self.orders.pop(order_id)
        else:
            self.orders[order_id] = o
        opened = p is None
        if opened:
            zero = notional * 0  # with the currency's places
            p = PositionCapital(position_id, o.symbol, o.side, q, q, notional, notional,
                                zero, f, "OPEN", now, account_id=o.account_id,
                                order_id=o.order_id, tp_price=o.tp_price,
                                sl_price=o.sl_price, strategy=o.strategy,
                                exchange=o.exchange, entry_price=px, exit_notional=zero)
        else:
            p = replace(p, qty_open=p.qty_open + q, qty_total=p.qty_total + q,
                        entry_notional=p.entry_notional + notional,
                        reserved=p.reserved + notional, fees=p.fees + f,
                        entry_price=weighted_price(p.entry_price, p.qty_total, px, q))
        self.positions[position_id] = p
        self.reserved_for_orders -= portion
        self.reserved_for_positions += notional
        self.fees += f
        fill = Fill(fill_id, order_id, position_id, "ENTRY", o.symbol, o.side, q, px,
                    notional, f, ZERO, now)
        events: list[Event] = [self._event(OrderFilled, now, cause or fill_id, fill=fill,
                                           order=o, position=p, released=portion,
                                           position_opened=opened,
                                           while_blocked=self.entries_blocked())]
        events += self._stop_if_short(now, fill_id)
        self._observe(now)
        return Outcome(fill, events)

    def end_order(self, order_id: str, status: str, now: datetime,
                  cause: str = "") -> Outcome:
        """Cancel, reject or expire an order's unfilled remainder: release its capital."""
        if status not in ORDER_END_STATES:
            raise InvalidArgument("status", f"status must be one of {sorted(ORDER_END_STATES)}")
        o = self.orders.get(order_id)
        if o is None or o.status not in ORDER_OPEN_STATES:
            raise NotFound("order", order_id)
        amount = o.reserved
        o = replace(o, reserved=ZERO, status=status, updated_at=now)
        del self.orders[order_id]
        self.reserved_for_orders -= amount
        return Outcome(o, [self._event(OrderCapitalReleased, now, cause or order_id, order=o,
                                       amount=amount)])

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
                  reason: str | None = None) -> Outcome:
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
                    "SELL" if p.side == "BUY" else "BUY", q, px, proceeds, f, pnl, now)
        events: list[Event] = [self._event(PositionReduced, now, cause or fill_id, fill=fill,
                                           position=p, released=released)]
        if left:
            self.positions[position_id] = p
        else:
            del self.positions[position_id]
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

    # -- trading state ----------------------------------------------------------------

    def set_state(self, state: str, reason: str, changed_by: str, now: datetime,
                  cause: str = "") -> Outcome:
        if state not in TRADING_STATES:
            raise InvalidArgument("state", f"state must be one of {list(TRADING_STATES)}")
        if state == self.state:
            return Outcome(state, [], reused=True)
        self.state = state
        return Outcome(state, [self._event(TradingStateChanged, now, cause or changed_by,
                                           state=state, reason=reason or "",
                                           changed_by=changed_by)])


class LedgerView(msgspec.Struct, frozen=True):
    """What `ledger.get` answers: the six buckets, `available`, and the trading state."""

    profile_id: str
    currency: str
    allocated: Decimal
    held: Decimal
    reserved_for_orders: Decimal
    reserved_for_positions: Decimal
    realized_pnl: Decimal
    fees: Decimal
    available: Decimal
    state: str
    seq: int

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerView:
        return cls(ledger.profile_id, ledger.currency, ledger.allocated, ledger.held,
                   ledger.reserved_for_orders, ledger.reserved_for_positions,
                   ledger.realized_pnl, ledger.fees, ledger.available, ledger.state,
                   ledger.seq)


class ProfileView(msgspec.Struct, frozen=True):
    profile: m.Profile
    ledger: LedgerView
    #: the capital allocated when the profile was created (deposits come on top)
    initial_allocation: Decimal
    #: the profile's limits, equity and breakers (`Ledger.risk_view`)
    risk: dict | None = None


class AuditReport(msgspec.Struct, frozen=True):
    profile_id: str
    violations: list[str]
    live: Buckets
    rebuilt: Buckets | None

    @property
    def ok(self) -> bool:
        return not self.violations
