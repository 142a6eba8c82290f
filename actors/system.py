"""`System`: capflow in one process. It owns the lifecycle (start in order, ping, stop in
reverse) and is the embedded API; the ZeroMQ server calls the same methods. Storage is
opened by `capflow.storage.open.open_storage`, here or by the embedding program.

    with System() as cf:                       # SQLite under ./data/ by default
        cf.create_profile("alpha", "10000")
        r = cf.reserve("alpha", "BTCUSDT", "2500", client_request_id="bot-1-42")
        cf.release("alpha", r.reservation.reservation_id)
        print(cf.ledger("alpha").available)    # Decimal('10000.00')

Blocking calls wait for the commit of what they changed (at most
``ledger.call_timeout_s``); `submit()` is the non-blocking form that returns a `Reply`.
Business denials raise `Denied` (``.code`` is ``INSUFFICIENT_CAPITAL``, ``RISK_REJECTED``,
...); bad input raises `InvalidArgument` with the field.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from capflow.actors.accounts import Accounts
from capflow.actors.allocation_service import AllocationService
from capflow.actors.bus import EventBus
from capflow.actors.config import Config, load_config
from capflow.actors.ledger_actor import Reconcile
from capflow.actors.ledger_context import LedgerContext
from capflow.actors.metrics import MetricsEndpoint, start_metrics
from capflow.actors.model import messages as m
from capflow.actors.model.allocation import Decision, Instruments
from capflow.actors.model.clock import Clock
from capflow.actors.model.errors import Conflict, InvalidArgument, Unavailable
from capflow.actors.model.ids import new_id
from capflow.actors.model.ledger import AuditReport, LedgerView, ProfileView
from capflow.actors.model.limits import load_timezone
from capflow.actors.model.messages import Profile, Reservation, Transfer
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.risk import GlobalState, RiskLimits, known_profile, resolve
from capflow.actors.registry import LedgerRegistry
from capflow.actors.reply import Reply
from capflow.actors.scheduler import Scheduler
from capflow.actors.system_trading import TradingCalls
from capflow.actors.trading import Trading
from capflow.storage.open import Storage, open_storage

#: how often an idle server checks that it still owns its database (storage/owner.py)
OWNER_CHECK_S = 5.0
PROFILE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789-_.:@")


class ReserveResult(msgspec.Struct, frozen=True):
    reservation: Reservation
    reused: bool


class TransferResult(msgspec.Struct, frozen=True):
    transfer: Transfer
    ledger: LedgerView
    reused: bool


def _pin_process(cpus) -> None:
    """Pin every thread of this process (sched_setaffinity(0) moves only the calling
    thread; threads started later inherit from the thread that starts them)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile


def check_profile_id(profile_id: object) -> str:
    if (not isinstance(profile_id, str) or not 1 <= len(profile_id) <= 128
            or not PROFILE_ID_CHARS.issuperset(profile_id)):
        raise InvalidArgument("profile_id", "profile_id must be 1..128 characters of "
                                            "letters, digits and - _ . : @")
    return profile_id


class System(TradingCalls):
    def __init__(self, config: Config | None = None, *, clock: Clock | None = None,
                 lock_wait_s: float = 15.0, storage: Storage | None = None):
        self.config = config or load_config()
        self.clock = clock or Clock()
        #: how long the storage process waits for the owner lock at start: a server
        #: restarted at once waits for its predecessor's last batch; a command of the
        #: command line waits for nothing (0: refused at once while another owns it)
        self.lock_wait_s = lock_wait_s
        #: storage opened by the embedding program (`open_storage` with this config's
        #: [storage]), which closes it after `stop`; None: `start` opens it, `stop` closes
        self._given_storage = storage
        self.storage: Storage | None = None
        self.bus = EventBus()
        self.started_at: float | None = None
        self._create_lock = threading.Lock()
        self.engine = None
        self.journal: Any = None  # capflow.actors.model.journal.Journal
        self.store: Any = None  # storage.ledger_store.LedgerStore (reads)
        self.registry: LedgerRegistry | None = None
        self.scheduler: Scheduler | None = None
        self.accounts: Accounts | None = None
        self.trading: Trading | None = None
        self.allocation: AllocationService | None = None
        #: the Prometheus endpoint (``[metrics] listen``; None: off)
        self.metrics: MetricsEndpoint | None = None
        self._unpinned: set[int] | None = None
        self._global = GlobalState()
        self._global_lock = threading.Lock()
        self._owner_checked = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> System:
        try:
            return self._start()
        except BaseException:
            self._abort_start()
            raise

    def _abort_start(self) -> None:
        """A start that failed half-way releases what it had taken, in reverse."""
        self.started_at = None
        for step in (self._stop_metrics,
                     lambda: self.allocation and self.allocation.stop(),
                     lambda: self.trading and self.trading.stop(),
                     lambda: self.scheduler and self.scheduler.stop(),
                     lambda: self.registry and self.registry.stop_all(5),
                     self._close_storage):
            try:
                step()
            except Exception:
                logger.exception("cleanup after a failed start")

    def _start(self) -> System:
        cfg = self.config
        started = datetime.now(UTC)
        all_cpus = set(os.sched_getaffinity(0))
        if cfg.cpu_affinity:
            self._unpinned = all_cpus
            _pin_process(cfg.cpu_affinity)
        self.storage = self._given_storage
        if self.storage is None:
            # pinned (cpu_affinity): the storage process gets the other CPUs
            others = all_cpus - set(cfg.cpu_affinity or ()) or None
            self.storage = open_storage(cfg.storage, places=cfg.places, started_at=started,
                                        lock_wait_s=self.lock_wait_s,
                                        cpus=others if cfg.cpu_affinity else None)
        self.engine = self.storage.engine
        self.store = self.storage.ledger_store
        self.journal = self.storage.journal
        self.journal.watch_failures(self._on_write_failed)
        instruments = Instruments.load(cfg.allocation)
        ctx = LedgerContext(store=self.store, journal=self.journal, bus=self.bus,
                            clock=self.clock, schedule_expiry=self._schedule_expiry,
                            default_ttl_s=cfg.ledger.default_ttl_s,
                            ids=lambda: new_id("rsv"), allocation=cfg.allocation,
                            instruments=instruments, mark=self._mark,
                            risk_limits=self._risk_limits,
                            risk_tz=load_timezone(cfg.risk.timezone),
                            global_state=lambda: self._global,
                            default_account=cfg.brokers.default_account,
                            account_state=self._account_state,
                            account_limits=cfg.risk.accounts.get,
                            account_exposure=self._account_exposure,
                            account_currency=lambda aid: (
                                cfg.brokers.accounts[aid].currency
                                if aid in cfg.brokers.accounts else None),
                            report_equity=self._report_equity)
        # storage off keeps ledgers only in memory actors: nothing to passivate them to
        durable = self.storage.durable
        max_live = cfg.ledger.max_live if durable else 1 << 30
        stored = self.store.global_state()
        if stored is not None:
            self._global = GlobalState(stored["state"], stored["reason"],
                                       stored["changed_by"], stored["changed_at"])
            if self._global.state != "ACTIVE":
                logger.warning("trading is {} for every profile (kill switch set by {}: {})",
                               self._global.state, self._global.changed_by,
                               self._global.reason)
        self.registry = LedgerRegistry(ctx, max_live=max_live, idle_s=cfg.ledger.idle_s)
        self.registry.add_known(self.store.profile_ids())
        self.scheduler = Scheduler(self.clock, self._fire_expiry,
                                   on_tick=self._housekeeping if durable else None)
        self._recover()
        self.scheduler.start()
        self.started_at = time.monotonic()
        self._start_trading(instruments, self.storage.oms_store,
                            self.store.list_profiles("", 1 << 62), self.storage.control_store)
        try:
            self.metrics = start_metrics(cfg.metrics, self)
        except BaseException:  # e.g. its port is taken: nothing stays started
            self.stop()
            raise
        logger.info("capflow started: {} profiles", self.registry.known_count())
        return self

    def stop(self) -> None:
        if self.started_at is None:
            return
        self.started_at = None
        self._stop_metrics()
        self.allocation.stop()
        self.trading.stop()
        self.scheduler.stop()
        self.registry.stop_all()
        self._close_storage()
        if self._unpinned is not None:
            _pin_process(self._unpinned)
            self._unpinned = None
        logger.info("capflow stopped")

    def _stop_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.stop()

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of the metrics endpoint (its path is ``/metrics``), or None."""
        metrics = self.metrics
        return None if metrics is None else metrics.address

    def _close_storage(self) -> None:
        """Close storage if this System opened it (else its opener closes it)."""
        if self.storage is not None and self.storage is not self._given_storage:
            self.storage.close()

    @property
    def writer(self) -> Any:
        """The group-commit writer under the journal (its health; its executor, the
        storage process, in tests); None before `start`."""
        return self.storage.writer if self.storage is not None else None

    @property
    def fenced(self) -> str | None:
        """Why this server writes nothing any more, or None: another server took its
        database over (storage/owner.py). Every write fails UNAVAILABLE with this reason;
        `system.health` reports ``status: "fenced"``. Only a restart serves again."""
        return self.journal.fenced if self.journal is not None else None

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _recover(self) -> None:
        """Compare every snapshot with what the rows imply; expire what is overdue."""
        if not self.storage.durable:
            return
        snapshots = self.store.snapshots()
        rebuilt = self.store.rebuild()
        for pid, facts in rebuilt.items():
            snap = snapshots.get(pid)
            if snap is not None and snap != facts:
                logger.bind(profile=pid).error(
                    "ledger snapshot differs from its rows: {}; the profile goes "
                    "REDUCE_ONLY and runs on what the rows say", snap.diff(facts))
                # not self._call(): the system is not open for callers until recovery ends
                done = Reply()
                self.registry.tell(pid, Reconcile(snapshot=snap, rebuilt=facts,
                                                  cause="recovery"), done)
                done.get(self.config.ledger.call_timeout_s)
        for pid, when in self.store.active_expiries():
            self.scheduler.schedule(pid, when)
        self.scheduler.run_due()

    def _mark(self, symbol: str) -> Decimal | None:
        return self.trading.mark(symbol) if self.trading is not None else None

    def _account_state(self, account_id: str | None):
        trading = self.trading
        return None if trading is None else trading.safety.account_state(account_id)

    def _account_exposure(self, account_id: str, profile_id: str) -> Decimal:
        if self.accounts is None:
            return Decimal(0)
        return self.accounts.exposure_of_others(account_id, profile_id)

    def _report_equity(self, profile_id: str, account_id: str, pnl: Decimal,
                       exposure: Decimal, ts) -> None:
        if self.accounts is not None:
            self.accounts.report_equity(profile_id, account_id, pnl, exposure, ts)

    def _risk_limits(self, profile_id: str, risk_profile: str | None) -> RiskLimits:
        try:
            return resolve(self.config.risk, profile_id, risk_profile)
        except InvalidArgument:
            # stored under a risk profile the config no longer has: fail closed
            logger.bind(profile=profile_id).error(
                "risk profile {!r} is not configured: every entry is refused "
                "(SYMBOL_NOT_ALLOWED) until it is", risk_profile)
            return RiskLimits(allowed_symbols=[])

    def _schedule_expiry(self, profile_id: str, when) -> None:
        self.scheduler.schedule(profile_id, when)

    def _fire_expiry(self, profile_id: str) -> None:
        self.registry.tell(profile_id, m.ExpireReservations(cause="timer"), Reply())

    def _housekeeping(self) -> None:
        """Every second (the scheduler's tick): passivate idle ledgers; every
        `OWNER_CHECK_S`, probe storage, which also reads the owner epoch, so that even an
        idle server finds out within seconds that another one took its database over."""
        self.registry.passivate_idle()
        now = time.monotonic()
        if now - self._owner_checked >= OWNER_CHECK_S:
            self._owner_checked = now
            self.journal.probe()

    def _on_write_failed(self, profile_ids: set[str]) -> None:
        for pid in profile_ids:
            self.registry.tell_if_live(pid, m.Resync())

    def run_timers(self) -> int:
        """Fire every timer that is due by the clock now (for tests with a manual clock)."""
        return self.scheduler.run_due()

    # -- generic calls ----------------------------------------------------------------

    def submit(self, profile_id: str, cmd: m.Command, callback=None) -> Reply:
        """Send `cmd` to the profile's ledger actor; never blocks. The reply resolves to
        an `Outcome` after the change is committed, or fails with a `CapflowError`."""
        reply = Reply(callback)
        if self.started_at is None:
            reply.fail(Unavailable("capflow is not running"))
        else:
            self.registry.tell(profile_id, cmd, reply)
        return reply

    def _call(self, profile_id: str, cmd: m.Command) -> Outcome:
        return self.submit(profile_id, cmd).get(self.config.ledger.call_timeout_s)

    # -- profiles ---------------------------------------------------------------------

    def create_profile(self, profile_id: str, allocated: Any = 0, *,
                       currency: str | None = None, risk_profile: str | None = None,
                       account_id: str | None = None) -> ProfileView:
        """Create a profile with its ledger. Repeating the same creation returns the
        existing profile; the same id with other content is `Conflict`."""
        return self.ensure_profile(profile_id, allocated, currency=currency,
                                   risk_profile=risk_profile, account_id=account_id)[0]

    def ensure_profile(self, profile_id: str, allocated: Any = 0, *,
                       currency: str | None = None, risk_profile: str | None = None,
                       account_id: str | None = None) -> tuple[ProfileView, bool]:
        """`create_profile`, also telling whether the profile already existed."""
        check_profile_id(profile_id)
        if not known_profile(self.config.risk, risk_profile):
            raise InvalidArgument("risk_profile", f"unknown risk profile {risk_profile!r}: "
                                                  "a preset (atlas, orion, nova) or one of "
                                                  "[risk.profiles]")
        if self.accounts is not None:
            self.accounts.check_account(account_id)
        currency = currency or self.config.ledger.default_currency
        if currency not in self.config.ledger.currency_places:
            raise InvalidArgument("currency", f"unknown currency {currency!r}")
        amount = parse_decimal(allocated, "allocated", allow_zero=True,
                               places=self.config.places(currency))
        with self._create_lock:
            if self.registry.knows(profile_id):
                existing = self.get_profile(profile_id)
                p = existing.profile
                if (p.currency, p.risk_profile, p.account_id, existing.initial_allocation
                        ) != (currency, risk_profile, account_id, amount):
                    raise Conflict(f"profile {profile_id!r} exists with other settings",
                                   {"profile_id": profile_id})
                return existing, True
            now = self.clock.now()
            profile = Profile(profile_id, currency, account_id, risk_profile, "ACTIVE", "",
                              "create", now, now)
            # the account's cash is divided among its profiles: claim this share first
            claim = self.accounts.claim(account_id, currency, amount) if (
                self.accounts is not None and amount) else None
            # an unknown outcome (a timeout, a failed commit that may have been made)
            # keeps the claim booked: the account then looks fuller than it may be,
            # never emptier, until a restart recounts it from what was committed
            booked = amount
            try:
                done = Reply()
                self.journal.create_profile(profile, amount,
                                            on_commit=lambda: done.resolve(True),
                                            on_fail=done.fail)
                done.get(self.config.ledger.call_timeout_s)
            except (Conflict, InvalidArgument):
                booked = amount * 0
                raise
            finally:
                if claim is not None:
                    self.accounts.settle_claim(claim, booked)
            if self.accounts is not None:  # before the profile is known to anyone
                self.accounts.profile_created(profile_id, account_id, currency)
            self.registry.add_known([profile_id])
        return self.get_profile(profile_id), False

    def get_profile(self, profile_id: str) -> ProfileView:
        return self._call(profile_id, m.GetProfile()).result

    def list_profiles(self, after: str = "", limit: int = 1000) -> list[Profile]:
        return self.store.list_profiles(after, limit)

    def set_state(self, profile_id: str, state: str, reason: str = "",
                  changed_by: str = "api") -> ProfileView:
        """A profile's own trading state; answered once stored and, for HALTED and
        REDUCE_ONLY, once its working entry orders are canceled at the broker."""
        self._call(profile_id, m.SetTradingState(state=state, reason=reason,
                                                 changed_by=changed_by))
        if state != "ACTIVE" and self.accounts is not None:
            self.accounts.settle([self.accounts.account_for(profile_id)])
        return self.get_profile(profile_id)

    # -- the ledger -------------------------------------------------------------------

    def ledger(self, profile_id: str) -> LedgerView:
        return self._call(profile_id, m.GetLedger()).result

    def transfer(self, profile_id: str, cmd: m.Deposit | m.Withdraw,
                 callback=None) -> Reply:
        """Deposit or withdraw (non-blocking). A deposit first claims the amount from
        the unallocated cash of the profile's broker account (`actors.accounts`)."""
        if self.started_at is None:
            reply = Reply(callback)
            reply.fail(Unavailable("capflow is not running"))
            return reply
        return self.accounts.transfer(profile_id, cmd, self.submit, callback)

    def deposit(self, profile_id: str, amount: Any, client_request_id: str) -> TransferResult:
        out = self.transfer(profile_id, m.Deposit(
            amount=amount, client_request_id=client_request_id)).get(
            self.config.ledger.call_timeout_s)
        return TransferResult(out.result, self.ledger(profile_id), out.reused)

    def withdraw(self, profile_id: str, amount: Any, client_request_id: str) -> TransferResult:
        out = self.transfer(profile_id, m.Withdraw(
            amount=amount, client_request_id=client_request_id)).get(
            self.config.ledger.call_timeout_s)
        return TransferResult(out.result, self.ledger(profile_id), out.reused)

    # -- allocation (actors/allocation_service.py) ------------------------------------

    def quote(self, profile_id: str, symbol: str) -> Decision:
        """How much the profile may invest in `symbol` now (`allocation.quote`); raises
        `Denied` (INSUFFICIENT_CAPITAL) below the minimum order notional."""
        return self.allocation.quote(profile_id, symbol).get(
            self.config.ledger.call_timeout_s)

    def reserve(self, profile_id: str, symbol: str, amount: Any, client_request_id: str,
                ttl_s: int | None = None) -> ReserveResult:
        """Reserve capital for `symbol`, at most what a quote would allow now, for
        `ttl_s` (default ``[ledger] default_ttl_s``)."""
        out = self.allocation.reserve(profile_id, symbol, amount, client_request_id,
                                      ttl_s).get(self.config.ledger.call_timeout_s)
        return ReserveResult(out.result, out.reused)

    def set_liquidity(self, symbol: str, **signal: Any) -> dict[str, Any]:
        """Push a liquidity signal (provider ``push``), for `symbol` or ``"*"``."""
        return self.allocation.set_liquidity(symbol, signal)

    def release(self, profile_id: str, reservation_id: str, reason: str = "client") -> Reservation:
        return self._call(profile_id, m.ReleaseReservation(reservation_id=reservation_id,
                                                           reason=reason)).result

    def reserve_order(self, profile_id: str, order_id: str, symbol: str, side: str,
                      qty: Any, amount: Any, reservation_id: str | None = None):
        return self._call(profile_id, m.ReserveOrder(
            order_id=order_id, symbol=symbol, side=side, qty=qty, amount=amount,
            reservation_id=reservation_id)).result

    def fill_entry(self, profile_id: str, order_id: str, position_id: str, qty: Any,
                   price: Any, fee: Any = 0, fill_id: str | None = None):
        return self._call(profile_id, m.ApplyEntryFill(
            fill_id=fill_id or new_id("fill"), order_id=order_id, position_id=position_id,
            qty=qty, price=price, fee=fee)).result

    def end_order(self, profile_id: str, order_id: str, status: str = "CANCELED"):
        return self._call(profile_id, m.EndOrder(order_id=order_id, status=status)).result

    def fill_exit(self, profile_id: str, position_id: str, qty: Any, price: Any,
                  fee: Any = 0, fill_id: str | None = None):
        return self._call(profile_id, m.ApplyExitFill(
            fill_id=fill_id or new_id("fill"), position_id=position_id, qty=qty,
            price=price, fee=fee)).result

    def audit(self, profile_id: str) -> AuditReport:
        """The live ledger's invariants and its comparison with a rebuild from rows."""
        return self._call(profile_id, m.Audit()).result

    def available(self, profile_id: str) -> Decimal:
        return self.ledger(profile_id).available
