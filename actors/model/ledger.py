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
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from msgspec.structs import replace

from capflow.actors.model import messages as m
from capflow.actors.model.allocation import CapitalPicture, Decision, exposure_by_symbol
from capflow.actors.model.amend import LedgerAmend
from capflow.actors.model.errors import Conflict, Denial, InvalidArgument, NotFound
from capflow.actors.model.ledger_risk import LedgerRisk
from capflow.actors.model.ledger_signals import LedgerSignals
from capflow.actors.model.ledger_trading import LedgerTrading
from capflow.actors.model.messages import (
    ACTIVE,
    EXPIRED,
    RELEASED,
    TRADING_STATES,
    Buckets,
    CapitalDeposited,
    CapitalReserved,
    CapitalWithdrawn,
    Event,
    LedgerMismatchDetected,
    OrderCapital,
    PositionCapital,
    Reservation,
    ReservationExpired,
    ReservationReleased,
    SignalRecord,
    TradingStateChanged,
    Transfer,
    available_of,
)
from capflow.actors.model.money import ZERO, parse_decimal, quant
from capflow.actors.model.orders import parse_symbol
from capflow.actors.model.outcome import Outcome, check_client_key
from capflow.actors.model.position_book import PositionBook
from capflow.actors.model.protections import CLOSES_KEPT, Close
from capflow.actors.model.risk import BreakerState, RiskGate


class Ledger(LedgerRisk, LedgerSignals, LedgerTrading, LedgerAmend):
    """The capital of one trading profile. Not thread-safe: one owner (its actor)."""

    def __init__(self, profile_id: str, currency: str, places: int, *,
                 buckets: Buckets | None = None, seq: int = 0, state: str = "ACTIVE",
                 reservations: Iterable[Reservation] = (), orders: Iterable[OrderCapital] = (),
                 positions: Iterable[PositionCapital] = (),
                 transfers: Iterable[Transfer] = (),
                 order_keys: dict[str, tuple[str, tuple]] | None = None,
                 signals: Iterable[SignalRecord] = (),
                 breakers: BreakerState | None = None, closes: Iterable[Close] = ()):
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
        self.positions = PositionBook(positions)
        #: the orders that ended (canceled, rejected, expired) most recently, oldest first:
        #: a venue may report a fill of one after it ended, and that fill is booked
        self.ended_orders: dict[str, OrderCapital] = {}
        self.transfers: dict[str, Transfer] = {t.client_request_id: t for t in transfers}
        #: client_order_id -> (order_id, fingerprint) of every order with a client key
        self.order_keys: dict[str, tuple[str, tuple]] = dict(order_keys or {})
        self.signals: dict[str, SignalRecord] = {r.signal_id: r for r in signals}
        #: the most recent closes, oldest first, kept when a protection is set (the
        #: actor reads them back from storage when it loads the ledger)
        self.closes: deque[Close] = deque(closes, maxlen=CLOSES_KEPT)
        self.held = sum((h.amount for h in self.reservations.values() if h.status == ACTIVE), zero)
        self.reserved_for_orders = sum((o.reserved for o in self.orders.values()), zero)
        self.reserved_for_positions = sum((p.reserved for p in self.positions.values()), zero)
        #: limits, breakers, order bucket: none until `attach_risk` (its actor does when
        #: it loads the ledger)
        self.risk = RiskGate(breakers=breakers)
        #: breaker events made while checking an entry that was then denied: the actor
        #: persists them anyway (`take_risk_events`)
        self._risk_events: list[Event] = []

    # -- views ------------------------------------------------------------------------

    @property
    def available(self) -> Decimal:
        return available_of(self)

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
                self.positions, self.orders.values(), self.held_by_symbol, mark))

    # -- capital movements ------------------------------------------------------------

    def deposit(self, amount: object, client_request_id: str, now: datetime,
                cause: str = "", refusal: Denial | None = None) -> Outcome | Denial:
        """With `refusal`, only a repeat of an earlier deposit is answered (reused);
        a new one gets the refusal."""
        if refusal is not None and check_client_key(client_request_id) not in self.transfers:
            self._amount(amount)  # bad input is still bad input
            return refusal
        return self._transfer(self._amount(amount), client_request_id, now, cause)

    def withdraw(self, amount: object, client_request_id: str, now: datetime,
                 cause: str = "") -> Outcome | Denial:
        return self._transfer(-self._amount(amount), client_request_id, now, cause)

    def _transfer(self, signed: Decimal, key: str, now: datetime,
                  cause: str) -> Outcome | Denial:
        key = check_client_key(key)
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
        key = check_client_key(client_request_id)
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


    # -- trading state ----------------------------------------------------------------

    def attach_risk(self, **dependencies: Any) -> None:
        """Run the ledger's risk with `dependencies` (`RiskGate`'s arguments: limits,
        time zone, market prices, the global and account states, the account's room,
        the concentration rules, the order bucket). Its breaker state stays."""
        old = self.risk
        self.risk = RiskGate(breakers=old.breakers, **dependencies)
        self.risk.encoded = old.encoded

    def reconcile(self, snapshot: Buckets, rebuilt: Buckets, now: datetime) -> Outcome:
        """Startup found the snapshot and the rows disagree: run on what the rows say,
        record both in the journal, and stop new exposure until a human looks."""
        self.allocated = rebuilt.allocated
        self.realized_pnl = rebuilt.realized_pnl
        self.fees = rebuilt.fees
        events = [self._event(LedgerMismatchDetected, now, "recovery", snapshot=snapshot,
                              rebuilt=rebuilt)]
        events += self.set_state("REDUCE_ONLY", "LEDGER_MISMATCH", "recovery", now).events
        return Outcome(self.buckets(), events)

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
