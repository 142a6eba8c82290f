"""`LedgerActor`: the one thread that owns a profile's `Ledger` (capflow.actors.model.ledger).

It loads the ledger from storage, applies each command, appends the resulting events and
snapshot to the journal and answers once they are committed.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from queue import SimpleQueue
from typing import Any

import pykka
from loguru import logger
from msgspec.structs import replace

from capflow.actors.ledger_context import LedgerContext
from capflow.actors.model import ledger_stops
from capflow.actors.model import messages as m
from capflow.actors.model.allocation import (
    decide,
)
from capflow.actors.model.amend import AmendOrder
from capflow.actors.model.errors import (
    CapflowError,
    Denial,
    Denied,
    Internal,
    NotFound,
    Unavailable,
)
from capflow.actors.model.ledger import AuditReport, Ledger, LedgerView, ProfileView
from capflow.actors.model.messages import (
    Buckets,
)
from capflow.actors.model.outcome import INITIAL_ALLOCATION_KEY, Outcome
from capflow.actors.model.risk import (
    Book,
    RateBucket,
)
from capflow.actors.model.stop_messages import MoveTrail, SetStops
from capflow.actors.reply import Reply

# ======================================================================================
# The actor: one per profile, a thin shell around its Ledger.
# ======================================================================================


class LedgerActor(pykka.ThreadingActor):
    """Owns one profile's `Ledger`: the only code that touches it.

    Messages are ``(command, Reply)`` pairs. A mutation is applied in memory, appended to
    the journal, and answered when the journal has committed it; the actor goes on
    with its next message meanwhile, so one profile's throughput is not one fsync per
    request. Answers that do not write (reads, denials, idempotent repeats) wait for the
    profile's earlier writes, so nothing is ever answered from uncommitted state.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox():
        return SimpleQueue()

    def __init__(self, profile_id: str, ctx: LedgerContext,
                 predecessor: threading.Event | None, retired: threading.Event):
        super().__init__()
        self.profile_id = profile_id
        self.ctx = ctx
        self.ledger: Ledger | None = None
        self.profile: m.Profile | None = None
        self.gen = 0
        self.submitted = 0
        self._predecessor = predecessor
        self._retired = retired
        self._scheduled: datetime | None = None
        self.account_id: str | None = None
        self._reports = False
        #: the order rate bucket lives with the actor, so a reload of the ledger (after
        #: a failed write, a bug) does not refill it
        self.bucket = RateBucket()
        self.log = logger.bind(profile=profile_id)

    # -- lifecycle --------------------------------------------------------------------

    def on_start(self) -> None:
        if self._predecessor is not None and not self._predecessor.wait(
                self.ctx.flush_timeout_s):
            self.log.error("previous actor of this profile did not retire in time")
        self._load()

    def on_failure(self, *exc_info) -> None:  # pragma: no cover -- on_receive catches all
        self._retired.set()

    def on_stop(self) -> None:
        self._retired.set()

    def _load(self) -> None:
        try:
            loaded = self.ctx.store.load(self.profile_id)
        except Exception as exc:  # storage down: answer UNAVAILABLE, try again next time
            self.ledger = None
            self.log.error("cannot load ledger: {}", exc)
            return
        if loaded is None:
            self.ledger = None
            return
        self.profile, self.ledger = loaded
        self._attach_risk()
        if self.ledger.risk.protected and not self.ledger.closes:
            try:  # the protections are derived from the stored closes
                self.ledger.closes.extend(self.ctx.store.recent_closes(self.profile_id))
            except Exception as exc:
                self.ledger = None
                self.log.error("cannot load the ledger's closes: {}", exc)
                return
        self._scheduled = None
        expired = self.ledger.expire_due(self.ctx.clock.now(), "activation")
        if expired.events:
            self._persist(expired, None)
        self._schedule_next()

    def _attach_risk(self) -> None:
        ctx = self.ctx
        account = self.profile.account_id or ctx.default_account
        self.account_id = account
        limits = ctx.account_limits(account)
        # the account-wide loss and exposure limits need each profile's figures, in the
        # account's currency (a profile in another one is not counted: no conversion)
        self._reports = (ctx.report_equity is not None and limits is not None
                         and ctx.account_currency(account) == self.profile.currency
                         and (limits.has_loss_limits or limits.max_gross_exposure is not None))
        deps: dict[str, Any] = {
            "mark": ctx.mark, "global_state": ctx.global_state,
            "account_state": lambda: ctx.account_state(account), "bucket": self.bucket}
        if ctx.risk_limits is not None:
            deps["limits"] = ctx.risk_limits(self.profile_id, self.profile.risk_profile)
        if ctx.risk_tz is not None:
            deps["tz"] = ctx.risk_tz
        if limits is not None and limits.max_gross_exposure is not None:
            deps["account_room"] = (limits.max_gross_exposure,
                                    lambda: ctx.account_exposure(account, self.profile_id))
        if ctx.instruments is not None and ctx.allocation is not None:
            deps["concentration"] = (ctx.instruments, ctx.allocation)
        self.ledger.attach_risk(**deps)

    # -- message loop -----------------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        cmd, reply = message
        try:
            handler = _HANDLERS[type(cmd)]
        except KeyError:
            reply.fail(Internal(f"unknown command {type(cmd).__name__}"))
            return
        if self.ledger is None and handler.needs_ledger:
            self._load()
            if self.ledger is None:
                self._answer(reply, error=self._missing())
                return
        breakers = self.ledger.risk.breakers if self.ledger is not None else None
        try:
            outcome = handler(self, cmd)
        except CapflowError as exc:
            self._flush_risk(breakers)
            self._answer(reply, error=exc)
            return
        except Exception:
            self.log.exception("bug while handling {}", type(cmd).__name__)
            self._answer(reply, error=Internal("internal error; see the server log"))
            self._resync()
            return
        if outcome is None:  # the handler dealt with the message itself
            reply.resolve(None)
            return
        if self.ledger.risk.breakers is not breakers:
            self._schedule_next()  # a new loss period: wake up at its end
        if isinstance(outcome, Denial) or not outcome.events:
            self._flush_risk(breakers)
        elif extra := self.ledger.take_risk_events():
            outcome.events = sorted(extra + outcome.events, key=lambda e: e.seq)
        if isinstance(outcome, Denial):
            self._answer(reply, error=_denied(outcome))
        elif outcome.events:
            self._persist(outcome, reply)
        else:
            self._answer(reply, value=outcome)

    def _flush_risk(self, before: Any) -> None:
        """Persist what the breakers did while handling a message that writes nothing
        else (a denied entry, a read that rolled a period over): a trip or reset as its
        event, a new high-water mark or period baseline with the snapshot. The answer
        then waits for it (`_answer`)."""
        led = self.ledger
        if led is None:
            return
        extra = led.take_risk_events()
        if extra:
            self._persist(Outcome(None, extra), None)
        elif led.risk.breakers is not before and before is not None:
            self.submitted += 1
            self.ctx.journal.append(self.profile_id, [], led, at=self.ctx.clock.now(),
                                    gen=self.gen, seq=self.submitted)

    def _missing(self) -> CapflowError:
        try:
            exists = self.ctx.store.load(self.profile_id) is not None
        except Exception:
            return Unavailable("storage is not reachable")
        return Unavailable("storage is not reachable") if exists else NotFound(
            "profile", self.profile_id)

    def _persist(self, outcome: Outcome, reply: Reply | None) -> None:
        ledger = self.ledger
        events = outcome.events
        self.submitted += 1
        bus = self.ctx.bus

        def committed() -> None:
            # listeners first: an account manager hears of a new order before the caller
            # is answered, so what the caller does next comes after it
            bus.publish(events)
            if reply is not None:
                reply.resolve(outcome)

        self.ctx.journal.append(self.profile_id, events, ledger, at=events[-1].ts,
                                gen=self.gen, seq=self.submitted, on_commit=committed,
                                on_fail=reply.fail if reply is not None else None)
        for e in events:
            if isinstance(e, m.TradingStateChanged):
                self.profile = replace(self.profile, state=e.state, state_reason=e.reason,
                                       state_by=e.changed_by, state_at=e.ts)
            elif isinstance(e, m.CapitalReserved):
                exp = e.reservation.expires_at
                if self._scheduled is None or exp < self._scheduled:
                    self._scheduled = exp
                    self.ctx.schedule_expiry(self.profile_id, exp)

    def _answer(self, reply: Reply, value: Any = None, error: Exception | None = None) -> None:
        """Answer now if nothing of this profile is still being written, else right after
        the pending writes commit (or fail, and then with their error)."""
        if self.ctx.journal.done_seq(self.profile_id) >= self.submitted:
            if error is None:
                reply.resolve(value)
            else:
                reply.fail(error)
            return
        if error is None:
            def done() -> None:
                reply.resolve(value)
        else:
            def done() -> None:
                reply.fail(error)
        self.ctx.journal.barrier(self.profile_id, gen=self.gen, seq=self.submitted,
                                 on_commit=done, on_fail=reply.fail)

    def _wait_for_writes(self) -> bool:
        deadline = time.monotonic() + self.ctx.flush_timeout_s
        while self.ctx.journal.done_seq(self.profile_id) < self.submitted:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def _resync(self) -> None:
        """Drop the in-memory ledger and reload it from what is committed."""
        self._wait_for_writes()
        self.gen += 1
        self._load()

    def _schedule_next(self) -> None:
        nxt = self.ledger.next_wakeup() if self.ledger is not None else None
        if nxt is not None and (self._scheduled is None or nxt != self._scheduled):
            self._scheduled = nxt
            self.ctx.schedule_expiry(self.profile_id, nxt)

    # -- handlers (each returns an Outcome, a Denial, or None when it answered itself) --

    def _get_ledger(self, cmd: m.GetLedger) -> Outcome:
        return Outcome(LedgerView.of(self.ledger), [])

    def _get_profile(self, cmd: m.GetProfile) -> Outcome:
        led = self.ledger
        first = led.transfers.get(INITIAL_ALLOCATION_KEY)
        initial = first.amount if first is not None else led.allocated * 0
        return Outcome(ProfileView(self.profile, LedgerView.of(led), initial,
                                   led.risk_view(self.ctx.clock.now())), [])

    def _deposit(self, cmd: m.Deposit):
        return self.ledger.deposit(cmd.amount, cmd.client_request_id, self.ctx.clock.now(),
                                   cmd.cause, cmd.refusal if cmd.repeat_only else None)

    def _withdraw(self, cmd: m.Withdraw):
        return self.ledger.withdraw(cmd.amount, cmd.client_request_id, self.ctx.clock.now(),
                                    cmd.cause)

    def _reserve(self, cmd: m.ReserveCapital):
        ttl = self.ctx.default_ttl_s if cmd.ttl_s is None else cmd.ttl_s
        cap = None
        if cmd.externals is not None and isinstance(cmd.symbol, str):
            cap = decide(self.ledger.picture(self.ctx.mark), cmd.symbol, cmd.externals,
                         self.ctx.instruments, self.ctx.allocation)
        return self.ledger.reserve(self.ctx.ids(), cmd.client_request_id, cmd.symbol,
                                cmd.amount, ttl, self.ctx.clock.now(), cmd.cause, cap=cap)

    def _picture(self, cmd: m.GetCapitalPicture) -> Outcome:
        return Outcome(self.ledger.picture(self.ctx.mark), [])

    def _release(self, cmd: m.ReleaseReservation):
        return self.ledger.release(cmd.reservation_id, cmd.reason, self.ctx.clock.now(),
                                   cmd.cause)

    def _expire(self, cmd: m.ExpireReservations):
        self._scheduled = None
        now = self.ctx.clock.now()
        self.ledger.observe(now)  # a loss period may have ended: roll it over now
        outcome = self.ledger.expire_due(now, cmd.cause or "timer")
        self._schedule_next()
        return outcome

    def _reserve_order(self, cmd: m.ReserveOrder):
        return self.ledger.reserve_order(cmd.order_id, cmd.symbol, cmd.side, cmd.qty,
                                         cmd.amount, self.ctx.clock.now(),
                                         cmd.reservation_id, cmd.cause)

    def _place_order(self, cmd: m.PlaceOrder):
        outcome = self.ledger.open_order(cmd.spec, cmd.amount, self.ctx.clock.now(),
                                         cmd.cause, cmd.refusal)
        self._report_if_new(outcome)
        return outcome

    def _signal(self, cmd: m.SubmitSignal):
        outcome = self.ledger.submit_signal(cmd.signal, cmd.policy, self.ctx.clock.now(),
                                            cmd.cause)
        self._report_if_new(outcome)
        return outcome

    def _report_if_new(self, outcome) -> None:
        """A new working order is exposure the account's other profiles must see."""
        if isinstance(outcome, Outcome) and any(
                isinstance(e, m.OrderCapitalReserved) for e in outcome.events):
            self._report()

    def _entry_fill(self, cmd: m.ApplyEntryFill):
        led = self.ledger
        if cmd.book and cmd.order_id not in led.orders and cmd.order_id not in (
                led.ended_orders):
            # a venue's fill of an order that ended before this ledger was loaded (a
            # restart): it happened, so the stored order is read back to book it
            ended = self.ctx.store.ended_order(self.profile_id, cmd.order_id)
            if ended is not None:
                led.keep_ended(ended)
        outcome = self.ledger.fill_entry(cmd.fill_id, cmd.order_id, cmd.position_id,
                                         cmd.qty, cmd.price, cmd.fee, self.ctx.clock.now(),
                                         cmd.cause, book=cmd.book, fee_qty=cmd.fee_qty,
                                         fee_coin=(cmd.fee_coin, cmd.fee_coin_qty))
        self._report()
        return outcome

    def _observe_market(self, cmd: m.ObserveMarket) -> Outcome:
        book = self.ledger.observe(self.ctx.clock.now(), cmd.marks, cmd.tick_ts)
        self._report(book, cmd.marks)
        return Outcome(None, [])

    def _report(self, book: Book | None = None, marks: dict | None = None) -> None:
        """Tell the account's manager this profile's PnL and exposure (for the
        account-wide limits), when its account has such limits."""
        if not self._reports:
            return
        led = self.ledger
        if book is None:
            book = led.book(marks)
        try:
            self.ctx.report_equity(self.profile_id, self.account_id,
                                   book.equity - led.allocated, book.exposure,
                                   self.ctx.clock.now())
        except Exception:
            self.log.exception("reporting to the account's limits failed")

    def _end_order(self, cmd: m.EndOrder):
        outcome = self.ledger.end_order(cmd.order_id, cmd.status, self.ctx.clock.now(),
                                        cmd.cause, cmd.reason)
        self._report()
        return outcome

    def _trigger_order(self, cmd: m.TriggerOrder):
        return self.ledger.trigger_order(cmd.order_id, cmd.price, self.ctx.clock.now(),
                                         cmd.cause)

    def _amend_order(self, cmd: AmendOrder):
        return self.ledger.amend_order(cmd.order_id, cmd.qty, cmd.price, cmd.trigger_price,
                                       cmd.amount, cmd.max_price, cmd.filled_qty,
                                       self.ctx.clock.now(), cmd.cause)

    def _request_close(self, cmd: m.RequestClose):
        return self.ledger.request_close(cmd.position_id, cmd.reason, self.ctx.clock.now(),
                                         cmd.cause)

    def _set_stops(self, cmd: SetStops):
        return ledger_stops.set_stops(self.ledger, cmd, self.ctx.clock.now(), cmd.cause)

    def _move_trail(self, cmd: MoveTrail):
        return ledger_stops.move_trail(self.ledger, cmd, self.ctx.clock.now(), cmd.cause)

    def _exit_fill(self, cmd: m.ApplyExitFill):
        outcome = self.ledger.fill_exit(cmd.fill_id, cmd.position_id, cmd.qty, cmd.price,
                                        cmd.fee, self.ctx.clock.now(), cmd.cause, cmd.reason,
                                        fee_coin=(cmd.fee_coin, cmd.fee_coin_qty))
        self._report()
        return outcome

    def _set_state(self, cmd: m.SetTradingState):
        return self.ledger.set_state(cmd.state, cmd.reason, cmd.changed_by,
                                     self.ctx.clock.now(), cmd.cause)

    def _check_risk(self, cmd: m.CheckRisk) -> Outcome:
        return Outcome(self.ledger.what_if_signal(cmd.signal, cmd.policy,
                                                  self.ctx.clock.now()), [])

    def _reset_breakers(self, cmd: m.ResetBreakers) -> Outcome:
        return self.ledger.reset_breakers(cmd.kinds, cmd.reason, cmd.changed_by,
                                          self.ctx.clock.now(), cmd.cause)

    def _audit(self, cmd: m.Audit) -> Outcome:
        self._wait_for_writes()
        rebuilt = self.ctx.store.rebuild([self.profile_id]).get(self.profile_id)
        live = self.ledger.buckets()
        problems = self.ledger.violations()
        if rebuilt is not None and rebuilt != live:
            problems.append(f"ledger differs from its rebuild: {live.diff(rebuilt)}")
        return Outcome(AuditReport(self.profile_id, problems, live, rebuilt), [])

    def _reconcile(self, cmd: Reconcile):
        return self.ledger.reconcile(cmd.snapshot, cmd.rebuilt, self.ctx.clock.now())

    def _passivate(self, cmd: m.Passivate) -> None:
        if not self._wait_for_writes():
            self.log.error("passivating with writes still pending")
        self._retired.set()
        self.stop()

    def _on_resync(self, cmd: m.Resync) -> None:
        self.log.warning("a write failed; reloading the ledger from storage")
        self._resync()


class Reconcile(m.Command, frozen=True):
    """Internal (recovery): adopt the rebuilt buckets and flag the profile."""

    snapshot: Buckets
    rebuilt: Buckets


def _denied(denial: Denial) -> CapflowError:
    return Denied(denial)


def _handler(fn, needs_ledger: bool = True):
    fn.needs_ledger = needs_ledger
    return fn


_HANDLERS = {
    m.GetLedger: _handler(LedgerActor._get_ledger),
    m.GetProfile: _handler(LedgerActor._get_profile),
    m.Deposit: _handler(LedgerActor._deposit),
    m.Withdraw: _handler(LedgerActor._withdraw),
    m.ReserveCapital: _handler(LedgerActor._reserve),
    m.GetCapitalPicture: _handler(LedgerActor._picture),
    m.ReleaseReservation: _handler(LedgerActor._release),
    m.ExpireReservations: _handler(LedgerActor._expire),
    m.ReserveOrder: _handler(LedgerActor._reserve_order),
    m.PlaceOrder: _handler(LedgerActor._place_order),
    m.SubmitSignal: _handler(LedgerActor._signal),
    m.ApplyEntryFill: _handler(LedgerActor._entry_fill),
    m.EndOrder: _handler(LedgerActor._end_order),
    m.ApplyExitFill: _handler(LedgerActor._exit_fill),
    m.RequestClose: _handler(LedgerActor._request_close),
    m.TriggerOrder: _handler(LedgerActor._trigger_order),
    SetStops: _handler(LedgerActor._set_stops),
    MoveTrail: _handler(LedgerActor._move_trail),
    AmendOrder: _handler(LedgerActor._amend_order),
    m.SetTradingState: _handler(LedgerActor._set_state),
    m.CheckRisk: _handler(LedgerActor._check_risk),
    m.ObserveMarket: _handler(LedgerActor._observe_market),
    m.ResetBreakers: _handler(LedgerActor._reset_breakers),
    m.Audit: _handler(LedgerActor._audit),
    Reconcile: _handler(LedgerActor._reconcile),
    m.Passivate: _handler(LedgerActor._passivate, needs_ledger=False),
    m.Resync: _handler(LedgerActor._on_resync, needs_ledger=False),
}
