"""`AccountManagerActor`: one per broker account, hosting its adapter.

It is the execution side of the profiles that belong to the account: it hears (from the
event bus, after their commit) of the orders their ledgers recorded, sends them to the
adapter, feeds the adapter the simulator's ticks (an adapter with its venue's prices
publishes those instead: `VenueTicks`, handed to the `on_event` listener), and books
what the adapter reports -- fills, exits, cancels -- on the profiles' ledgers.
It never waits on a ledger: bookings are sent with a callback, and `pending` counts
those not yet committed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from queue import SimpleQueue
from typing import Any

import pykka
from loguru import logger

from capflow.actors import account_amend, account_reconcile
from capflow.actors.account_messages import (
    Amend,
    Cancel,
    CancelEntries,
    ClaimCapital,
    ClaimSlot,
    Close,
    FreeSlot,
    GetAccount,
    Info,
    Place,
    RebaseLossLimits,
    Reconcile,
    Reduce,
    ReportEquity,
    Restore,
    ReturnCapital,
    SettleClaim,
    SettleSlot,
    SlotQuery,
    Stops,
    Sync,
    Ticks,
)
from capflow.actors.account_status import AccountStatus, broker_order, broker_position
from capflow.actors.alerts import CRITICAL, WARNING, Alert
from capflow.actors.model import messages as m
from capflow.actors.model.account_risk import AccountRisk
from capflow.actors.model.errors import (
    CapflowError,
    Denial,
    Denied,
    Internal,
    InvalidArgument,
    NotFound,
)
from capflow.actors.model.limits import AccountRiskLimits
from capflow.actors.model.order_types import EXPIRED
from capflow.actors.model.stop_messages import MoveTrail
from capflow.actors.reply import Reply
from capflow.brokers.base import BrokerAdapter
from capflow.brokers.events import (
    BrokerEvent,
    Connected,
    ConnectionFailed,
    Disconnected,
    EntryFilled,
    FillUnbookable,
    OrderCanceled,
    OrderRejected,
    OrderTriggered,
    PositionExited,
    PricesStale,
    TrailMoved,
    VenueTicks,
)
from capflow.brokers.reconcile import Reconciled


class AccountManagerActor(pykka.ThreadingActor):
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox():
        return SimpleQueue()

    def __init__(self, account_id: str, adapter_factory: Callable[..., BrokerAdapter],
                 submit: Callable[[str, m.Command, Callable], Reply],
                 status: AccountStatus,
                 on_event: Callable[[BrokerEvent], None] | None = None,
                 limits: AccountRiskLimits | None = None, *,
                 risk: AccountRisk | None = None,
                 on_breach: Callable[[str], bool] | None = None,
                 on_risk_saved: Callable[[dict], None] | None = None,
                 alert: Callable[[Alert], None] | None = None,
                 on_unbooked: Callable[[str], bool] | None = None, rows=None):
        super().__init__()
        self.account_id = account_id
        self._factory = adapter_factory
        self._submit = submit
        self._on_event = on_event
        self.adapter: BrokerAdapter | None = None
        self.status = status
        self._pending_lock = threading.Lock()
        self._cancel_waiters: dict[str, Reply] = {}
        self._claims: dict[int, Decimal] = {}
        self._emitted = 0  # events the adapter reported so far
        self._claim_ids = itertools.count(1)
        #: the account-wide limits (slots, loss, exposure); shown to other threads
        self.risk = risk or AccountRisk(account_id, limits, UTC)
        status.risk = self.risk
        #: (reason) -> True when the account was halted by it (a breach of its loss
        #: limits); (saved) -> None stores the daily references; alerts go out here
        self._on_breach = on_breach
        self._on_risk_saved = on_risk_saved
        self._alert = alert
        #: (reason) -> True when the account was set REDUCE_ONLY by it: a fill the
        #: broker reported that its ledger could not book
        self._on_unbooked = on_unbooked
        #: capflow's stored rows, for a live adapter's reconciliation
        #: (`brokers.reconcile.BookedRows`); the replies waiting for its next report,
        #: and the differences last alerted on (`actors.account_reconcile`)
        self._rows = rows
        #: (the adapter's request number, reply) of each account.reconcile waiting
        self.reconcile_waiters: list[tuple[int, Reply]] = []
        self.reconcile_seen: tuple | None = None
        #: working entry orders: order id -> (profile id, unfilled quantity), and those
        #: already asked to cancel (each once)
        self._working: dict[str, tuple[str, Decimal]] = {}
        self._canceling: set[str] = set()
        self.log = logger.bind(account=account_id)

    # -- lifecycle --------------------------------------------------------------------

    def on_start(self) -> None:
        self.adapter = self._factory(emit=self._emit)
        self.adapter.wake = self._wake
        self.adapter.init()
        self.adapter.rows = self._rows
        self.adapter.start()
        self.status.state = self.adapter.connection.state
        self.status.venue_rules = self.adapter.venue_rules
        self.status.prices = self.adapter.prices
        self.status.latency = self.adapter.latency

    def _wake(self) -> None:
        """Any thread: have the adapter stepped on this actor's thread soon."""
        try:
            self.actor_ref.tell((Sync(), Reply()))
        except pykka.ActorDeadError:
            pass  # stopping: nothing more is booked

    def on_stop(self) -> None:
        if self.adapter is not None:
            try:
                self.adapter.shutdown()
            except Exception:
                self.log.exception("adapter shutdown failed")

    def on_receive(self, message: Any) -> None:
        msg, reply = message
        status = self.status
        status.busy_since = time.monotonic()
        emitted = self._emitted
        try:
            handler = _HANDLERS[type(msg)]
            value = handler(self, msg, reply)
        except CapflowError as exc:
            reply.fail(exc)
        except Exception:
            self.log.exception("bug while handling {}", type(msg).__name__)
            reply.fail(Internal("internal error; see the server log"))
        else:
            if value is not _LATER:
                reply.resolve(value)
        finally:
            status.state = self.adapter.connection.state
            status.venue_rules = self.adapter.venue_rules
            if type(msg) in _CHANGES_CASH or self._emitted != emitted:
                status.cash_dirty = True
            status.slot_symbols = self.risk.slot_symbols
            status.working_entries = len(self._working)
            status.busy_since = None

    # -- handlers ---------------------------------------------------------------------

    def _place(self, msg: Place, reply: Reply) -> Any:
        self.risk.end_claim_for(msg.profile_id, msg.order.symbol)
        self.risk.hold_slot(msg.order.position_id or msg.order.order_id, msg.order.symbol)
        try:
            self.adapter.require_connected()
        except CapflowError as exc:
            self.log.error("order {} refused: {}", msg.order.order_id, exc.message)
            self._book(msg.profile_id, m.EndOrder(order_id=msg.order.order_id,
                                                  status="REJECTED", cause="broker"))
            raise
        self.adapter.subscribe(msg.order.symbol)
        o = msg.order
        self._working[o.order_id] = (msg.profile_id, o.qty - o.filled_qty)
        self.adapter.submit_order(broker_order(msg.profile_id, o))
        return True

    def _cancel(self, msg: Cancel, reply: Reply) -> Any:
        self._cancel_waiters[msg.order_id] = reply
        if not self.adapter.cancel_order(msg.order_id):
            self._cancel_waiters.pop(msg.order_id, None)
            raise NotFound("order", msg.order_id)
        return _LATER  # answered when the ledger has booked the cancel

    def _close(self, msg: Close, reply: Reply) -> Any:
        if not self.adapter.close_position(msg.position_id, msg.reason):
            raise NotFound("position", msg.position_id)
        return True

    def _stops(self, msg: Stops, reply: Reply) -> Any:
        a = self.adapter
        trail = {"trail": msg.trail} if a.supports_trailing and msg.trail_changed else {}
        if not a.set_stops(msg.position_id, msg.tp_price, msg.sl_price, **trail):
            raise NotFound("position", msg.position_id)
        return True

    def _ticks(self, msg: Ticks, reply: Reply) -> Any:
        adapter = self.adapter
        adapter.step()
        for tick in msg.ticks:
            adapter.on_tick(tick)
        return len(msg.ticks)

    def _restore(self, msg: Restore, reply: Reply) -> Any:
        orders = [broker_order(pid, o) for pid, o in msg.orders]
        positions = [broker_position(pid, p) for pid, p in msg.positions]
        for x in (*orders, *positions):
            self.risk.hold_slot(x.position_id, x.symbol)
        for o in orders:
            self._working[o.order_id] = (o.profile_id, o.qty - o.filled_qty)
        for x in (*orders, *positions):
            self.adapter.subscribe(x.symbol)
        self.adapter.restore(orders, positions)
        if orders or positions:
            self.log.info("restored {} working orders and {} open positions",
                          len(orders), len(positions))
        return len(orders), len(positions)

    def _info(self, msg: Info, reply: Reply) -> Any:
        info = self.adapter.account_info()
        self.status.free_cash = info.free_cash
        self.status.cash_dirty = False
        return info

    def _sync(self, msg: Sync, reply: Reply) -> Any:
        self.adapter.step()
        return True

    # -- the account's capital, divided among its profiles -----------------------------

    def _claim(self, msg: ClaimCapital, reply: Reply) -> Any:
        st = self.status
        capped = st.capital_cap is not None and st.capital_cap < st.capital
        capital = st.capital_cap if capped else st.capital
        free = capital - st.allocated - sum(self._claims.values(), Decimal(0))
        if msg.amount > free:
            details = {"available": free, "requested": msg.amount,
                       "account_id": self.account_id}
            if capped:
                details["max_live_capital"] = st.capital_cap
            raise Denied(Denial(
                "INSUFFICIENT_CAPITAL",
                f"broker account {self.account_id!r} has {free} unallocated"
                + (f" under its max_live_capital of {st.capital_cap}" if capped else "")
                + f"; {msg.amount} requested", details))
        claim = next(self._claim_ids)
        self._claims[claim] = msg.amount
        return claim

    def _settle(self, msg: SettleClaim, reply: Reply) -> Any:
        if self._claims.pop(msg.claim_id, None) is not None:
            self.status.allocated += msg.booked
        return True

    def _return(self, msg: ReturnCapital, reply: Reply) -> Any:
        self.status.allocated -= msg.amount
        return True

    # -- account-wide limits (actors.account_risk) ----------------------------------

    def _claim_slot(self, msg: ClaimSlot, reply: Reply) -> Any:
        claim = self.risk.claim_slot(msg.profile_id, msg.symbol)
        if isinstance(claim, Denial):
            raise Denied(claim)
        return claim

    def _settle_slot(self, msg: SettleSlot, reply: Reply) -> Any:
        self.risk.settle_slot(msg.claim_id)
        return True

    def _free_slot(self, msg: FreeSlot, reply: Reply) -> Any:
        self.risk.slot_freed(msg.position_id)
        return True

    def _slot_query(self, msg: SlotQuery, reply: Reply) -> Any:
        return self.risk.slot_checks(msg.symbol)

    def _report_equity(self, msg: ReportEquity, reply: Reply) -> Any:
        risk = self.risk
        if risk.report(msg.profile_id, msg.pnl, msg.exposure, msg.ts) and (
                self._on_risk_saved is not None):
            self._on_risk_saved(risk.saved())
        breach = risk.breach()
        if breach is not None and self._on_breach is not None and self._on_breach(breach):
            # halted just now (the state is set and being stored): stop what is working
            self._cancel_entries(CancelEntries(None, breach), reply)
        return True

    def _rebase(self, msg: RebaseLossLimits, reply: Reply) -> Any:
        self.risk.rebase()
        return self.risk.saved()

    # -- halts --------------------------------------------------------------------------

    def _cancel_entries(self, msg: CancelEntries, reply: Reply) -> Any:
        """Cancel the working entries of the profiles (all: None), each order once;
        exits (a position's take-profit, stop-loss, a requested close) stay."""
        wanted = msg.profile_ids
        asked = []
        for order_id, (pid, _left) in list(self._working.items()):
            if (wanted is None or pid in wanted) and order_id not in self._canceling:
                self._canceling.add(order_id)
                asked.append(order_id)
                try:
                    self.adapter.cancel_order(order_id, msg.reason)
                except Exception:
                    self.log.exception("canceling {} on a halt failed", order_id)
        if asked and self._alert is not None:
            one = next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None
            self._alert(Alert(
                kind="entries_canceled", severity=WARNING,
                scope="profile" if one else "account", target=one or self.account_id,
                reason=msg.reason, ts=self.adapter.clock.now(),
                details={"account_id": self.account_id, "order_ids": asked}))
        return asked

    # -- what the adapter reports -----------------------------------------------------

    def _emit(self, e: BrokerEvent) -> None:
        if isinstance(e, VenueTicks | PricesStale):  # the venue's prices: nothing to book
            self._tell_listener(e)
            return
        self._emitted += 1
        if isinstance(e, EntryFilled):
            working = self._working.get(e.order_id)
            # a fill of NaN, or beyond what is working, is refused by the ledger: the
            # order stays working (REDUCE_ONLY cancels it)
            if working is not None and e.qty.is_finite() and 0 < e.qty <= working[1]:
                left = working[1] - e.qty
                if left > 0:
                    self._working[e.order_id] = (working[0], left)
                else:
                    self._end_working(e.order_id)
            self._book(e.profile_id, m.ApplyEntryFill(
                fill_id=e.fill_id, order_id=e.order_id, position_id=e.position_id,
                qty=e.qty, price=e.price, fee=e.fee, book=True, cause=e.fill_id,
                fee_qty=e.fee_qty, fee_coin=e.fee_coin, fee_coin_qty=e.fee_coin_qty))
        elif isinstance(e, OrderTriggered):
            self._book(e.profile_id, m.TriggerOrder(order_id=e.order_id, price=e.price,
                                                    cause=e.order_id))
        elif isinstance(e, TrailMoved):
            self._book(e.profile_id, MoveTrail(position_id=e.position_id, trail=e.trail,
                                               cause=e.position_id))
        elif isinstance(e, PositionExited):
            self._book(e.profile_id, m.ApplyExitFill(
                fill_id=e.fill_id, position_id=e.position_id, qty=e.qty, price=e.price,
                fee=e.fee, reason=e.reason, cause=e.fill_id, fee_coin=e.fee_coin,
                fee_coin_qty=e.fee_coin_qty))
        elif isinstance(e, FillUnbookable):
            self.log.error("the broker reported a fill that cannot be booked: {}", e.reason)
            self._unbooked(e.profile_id, "fill", e.fill_id,
                           InvalidArgument("fill", f"{e.fill_id}: {e.reason}"))
        elif isinstance(e, OrderCanceled | OrderRejected):
            self._end_working(e.order_id)
            status = "CANCELED" if isinstance(e, OrderCanceled) else "REJECTED"
            if e.reason == EXPIRED:  # a GTD order's time passed
                status = "EXPIRED"
            self._book(e.profile_id, m.EndOrder(order_id=e.order_id, status=status,
                                                cause=e.reason, reason=e.reason),
                       waiter=self._cancel_waiters.pop(e.order_id, None))
        elif isinstance(e, Reconciled):
            account_reconcile.reconciled(self, e)
        elif isinstance(e, Connected | ConnectionFailed | Disconnected):
            self.status.connection_events.append(e)
            if isinstance(e, Disconnected):
                self.log.error("broker account gave up connecting after {} attempts: {}",
                               e.attempts, e.reason)
            elif isinstance(e, ConnectionFailed):
                self.log.warning("broker connection attempt {} failed ({}); retrying in "
                                 "{:.2f} s", e.attempt, e.error, e.retry_in_s)
            else:
                self.log.info("broker connected (attempt {})", e.attempt)
        self._tell_listener(e)

    def _tell_listener(self, e: BrokerEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(e)
            except Exception:
                self.log.exception("broker event listener failed")

    def _unbooked(self, profile_id: str, what: str, fill_id: str, error: Exception) -> None:
        """Any thread: the broker reported a fill (it happened) that the profile's ledger
        refused, or that made no sense: the ledger and the venue disagree from now on.
        The account goes REDUCE_ONLY and an operator is alerted; nothing is retried."""
        reason = (f"a {what} of {profile_id} reported by the broker could not "
                  f"be booked: {getattr(error, 'message', error)}")
        if self._alert is not None:
            self._alert(Alert(
                kind="fill_unbooked", severity=CRITICAL, scope="account",
                target=self.account_id, reason=reason, ts=self.adapter.clock.now(),
                details={"profile_id": profile_id, "fill_id": fill_id,
                         "code": getattr(error, "code", "INTERNAL")}))
        if self._on_unbooked is not None and self._on_unbooked(reason):
            try:  # set just now: stop what is working, as any REDUCE_ONLY does
                self.actor_ref.tell((CancelEntries(None, reason), Reply()))
            except pykka.ActorDeadError:
                pass

    def _end_working(self, order_id: str) -> None:
        self._working.pop(order_id, None)
        self._canceling.discard(order_id)

    def _book(self, profile_id: str, cmd: m.Command, waiter: Reply | None = None) -> None:
        with self._pending_lock:
            self.status.pending += 1

        def done(reply: Reply) -> None:
            value, error = reply.result()
            with self._pending_lock:
                self.status.pending -= 1
            if error is not None:
                self.status.booking_errors += 1
                self.log.bind(profile=profile_id).error("booking {} failed: {}",
                                                        type(cmd).__name__, error)
                if isinstance(cmd, m.ApplyEntryFill | m.ApplyExitFill):
                    self._unbooked(profile_id, type(cmd).__name__, cmd.fill_id, error)
            if waiter is not None:
                if error is None:
                    waiter.resolve(value)
                else:
                    waiter.fail(error)

        self._submit(profile_id, cmd, done)


_LATER = account_reconcile.LATER
#: messages that can change the account's free cash (besides any that make the adapter
#: report an event: a tick that fills)
_CHANGES_CASH = frozenset({Place, Cancel, Close, Restore, CancelEntries, Amend, Reduce})

_HANDLERS = {
    Place: AccountManagerActor._place,
    Cancel: AccountManagerActor._cancel,
    Close: AccountManagerActor._close,
    Stops: AccountManagerActor._stops,
    Ticks: AccountManagerActor._ticks,
    Restore: AccountManagerActor._restore,
    Info: AccountManagerActor._info,
    Sync: AccountManagerActor._sync,
    ClaimCapital: AccountManagerActor._claim,
    SettleClaim: AccountManagerActor._settle,
    ReturnCapital: AccountManagerActor._return,
    ClaimSlot: AccountManagerActor._claim_slot,
    SettleSlot: AccountManagerActor._settle_slot,
    FreeSlot: AccountManagerActor._free_slot,
    SlotQuery: AccountManagerActor._slot_query,
    CancelEntries: AccountManagerActor._cancel_entries,
    ReportEquity: AccountManagerActor._report_equity,
    RebaseLossLimits: AccountManagerActor._rebase,
    Reconcile: account_reconcile.reconcile,
    Amend: account_amend.amend,
    Reduce: account_amend.reduce,
    GetAccount: account_reconcile.get_account,
}
