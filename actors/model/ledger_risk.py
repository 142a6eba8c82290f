"""The risk half of a profile's ledger: its book at market, the breakers, the
pre-trade checks and the concentration limits (a mixin of `Ledger`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from msgspec.structs import replace

from capflow.actors.model import messages as m
from capflow.actors.model.allocation import (
    DIMENSIONS,
    concentration_limits,
    exposure_by_symbol,
)
from capflow.actors.model.errors import Denial, InvalidArgument
from capflow.actors.model.messages import Event
from capflow.actors.model.money import ZERO
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.protections import protection_checks
from capflow.actors.model.risk import (
    BREAKERS,
    EMPTY_BOOK,
    Book,
    BreakerState,
    Check,
    Proposal,
    breaker_figures,
    limits_map,
    observe,
    run_checks,
)


class LedgerRisk:
    """`Ledger`'s risk: reads its capital and positions, runs its `RiskGate`."""

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
                              breakers=figures, bucket_tokens=r.tokens(now),
                              protections=protection_checks(r.limits, self.closes,
                                                            prop.symbol, now)))
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
                until = "" if c.until is None else f" until {c.until.isoformat()}"
                return Denial("RISK_REJECTED", f"{c.check}: {c.value} against the limit "
                                               f"{c.limit}{until}", c.details())
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
        exposure = self._related_exposure(symbol, instruments)
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

    def _related_exposure(self, symbol: str, instruments) -> dict[str, Decimal]:
        """`exposure_by_symbol` of the symbols sharing a concentration key with `symbol`
        (itself, its sector's, industry's, area's): the only ones its limits count."""
        keys = [(dim, k) for dim, _ in DIMENSIONS
                if (k := instruments.key(symbol, dim)) is not None]
        candidates = dict.fromkeys(self.held_by_symbol)
        candidates.update(dict.fromkeys(self.positions.symbols()))
        candidates.update(dict.fromkeys(o.symbol for o in self.orders.values()))
        related = {s for s in candidates
                   if s == symbol or any(instruments.key(s, d) == k for d, k in keys)}
        return exposure_by_symbol(self.positions, self.orders.values(), self.held_by_symbol,
                                  self.risk.mark, related)

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
