"""`Trading`: the order management side of a `System` -- the market simulator, the
account managers, the signal audit log, and the calls of the order ops.

Order of things for a signal (`signal.submit`):

1. the raw signal is appended to the audit log, before anything else;
2. the profile's ledger actor sizes it, runs the checks, reserves the capital and records
   the order (and the signal, when it has an id) in one commit;
3. the commit's events reach the account manager, which sends the order to its adapter;
   the caller is answered after that hand-over, so what it does next comes after it;
4. ticks fill the order; the manager books each fill on the ledger; the position's
   take-profit / stop-loss (or `position.close`) closes it, and the exit is booked with
   its reason and realized PnL.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from capflow.actors.account import AccountManagerActor, AccountStatus, new_order_listener
from capflow.actors.account_messages import (
    Cancel,
    ClaimCapital,
    Close,
    Info,
    Restore,
    ReturnCapital,
    SettleClaim,
    Sync,
    Ticks,
)
from capflow.actors.alerts import raise_alert
from capflow.actors.audit_log import SignalAuditLog
from capflow.actors.model import messages as m
from capflow.actors.model.account_risk import AccountRisk
from capflow.actors.model.errors import Conflict, Denied, InvalidArgument, NotFound, Unavailable
from capflow.actors.model.ids import new_id
from capflow.actors.model.limits import load_timezone
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.orders import (
    CLOSE_REASONS,
)
from capflow.actors.model.settings import ConfigError
from capflow.actors.model.stats import compute_stats, group_stats
from capflow.actors.model.symbols import SymbolSlots
from capflow.actors.model.ticks import Tick
from capflow.actors.reply import Reply, relay
from capflow.actors.safety import Safety
from capflow.actors.simulator import MarketSimulatorActor
from capflow.actors.trading_entries import EntryFlow, _tell
from capflow.brokers.base import Connected, ConnectionFailed, Disconnected, load_adapter

ORDER_STATUSES = ("OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED")
#: what `order.list` filters by: a status, or CLOSED (every order no longer working)
ORDER_FILTERS = (*ORDER_STATUSES, "CLOSED")


class Trading(EntryFlow):
    def __init__(self, system):
        self.system = system
        self.config = system.config
        self.clock = system.clock
        self.sim = None
        self._sim = None  # its proxy
        self.board: dict[str, Tick] = {}
        self.managers: dict[str, Any] = {}  # account id -> ActorRef
        self.status: dict[str, AccountStatus] = {}
        self.account_of: dict[str, str | None] = {}
        #: profile -> the account whose cash its allocation is part of (None: the
        #: profile's currency is not the account's, so no share of it)
        self.capital_of: dict[str, str | None] = {}
        self.audit: SignalAuditLog | None = None
        self.oms_store = None
        self._unsubscribe: list[Callable[[], None]] = []
        #: accounts with account-wide open position limits (entries claim a slot first)
        self.slot_limited: set[str] = set()
        #: the symbols with a market, and the cap on new ones
        self.symbols: SymbolSlots | None = None
        #: the kill switch that acts: halts cancel entries, flatten, marking to market,
        #: account states and loss limits, alerts
        self.safety = Safety(system, self)

    # -- lifecycle --------------------------------------------------------------------

    def start(self, oms_store, profiles, control_store=None) -> None:
        cfg = self.config
        brokers = cfg.brokers
        if brokers.default_account not in brokers.accounts:
            raise ConfigError(f"[brokers] default_account {brokers.default_account!r} is not "
                              "one of [brokers.accounts]")
        unknown = sorted(set(cfg.risk.accounts) - set(brokers.accounts))
        if unknown:
            raise ConfigError(f"[risk.accounts] names accounts that are not configured: "
                              f"{unknown}")
        classes = {aid: load_adapter(a.adapter) for aid, a in brokers.accounts.items()}
        self.oms_store = oms_store
        self.account_of = {p.profile_id: p.account_id for p in profiles}
        self.capital_of = {p.profile_id: self._capital_account(p.account_id, p.currency)
                           for p in profiles}
        allocated: dict[str, Decimal] = {}
        snaps = self.system.store.snapshots()
        for pid, aid in self.capital_of.items():
            if aid is not None and pid in snaps:
                allocated[aid] = allocated.get(aid, Decimal(0)) + snaps[pid].allocated
        # what the account-wide loss limits start from: each profile's realized PnL
        pnl: dict[str, dict[str, Decimal]] = {}
        for pid, b in snaps.items():
            pnl.setdefault(self.account_for(pid), {})[pid] = b.realized_pnl - b.fees
        safety = self.safety
        safety.load(control_store, profiles)
        tz = load_timezone(cfg.risk.timezone)
        self.sim, self.board = MarketSimulatorActor.start_with_board(
            cfg.simulator, self.clock, publish=self.system.bus.publish)
        sim = self._sim = self.sim.proxy()
        scfg = cfg.simulator
        self.symbols = SymbolSlots(() if scfg.replay else scfg.symbols, self.board,
                                   max_symbols=scfg.max_symbols, allow_new=scfg.new_symbols)
        self._unsubscribe.append(self.system.bus.subscribe(self._on_recorded))
        self._unsubscribe.append(self.system.bus.subscribe(safety.on_events))
        for aid, acfg in brokers.accounts.items():
            status = AccountStatus()
            status.capital = acfg.initial_cash
            status.allocated = allocated.get(aid, Decimal(0))
            factory = functools.partial(classes[aid], aid, acfg, clock=self.clock,
                                        money_places=cfg.places(acfg.currency), ids=new_id)
            limits = cfg.risk.accounts.get(aid)
            if limits is not None and limits.has_slots:
                self.slot_limited.add(aid)
            risk = AccountRisk(aid, limits, tz, pnl=pnl.get(aid),
                               saved=safety.saved_risk(aid))
            ref = AccountManagerActor.start(
                aid, factory, self.system.submit, status, on_event=self._broker_event,
                limits=limits, risk=risk, on_breach=functools.partial(safety.breach, aid),
                on_risk_saved=functools.partial(safety.save_risk, aid),
                alert=functools.partial(raise_alert, self.system.bus.publish))
            self.managers[aid] = ref
            self.status[aid] = status
            self._unsubscribe.append(self.system.bus.subscribe(new_order_listener(aid, ref)))
            sim.subscribe(aid, functools.partial(self._deliver, ref)).get(timeout=10)
            if oms_store is not None:
                orders, positions = oms_store.open_book(aid)
                if orders or positions:
                    self._ask(aid, Restore(orders, positions), 60)
                    safety.restored(aid, orders, positions, profiles)
        if cfg.simulator.mode == "realtime":
            sim.start_realtime().get(timeout=10)
        logger.info("trading: {} account(s) {}, simulator in {} mode, OMS {}",
                    len(self.managers), sorted(self.managers), cfg.simulator.mode,
                    "on" if cfg.oms.enabled else "off (signals are audited only)")

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.sim is not None:
            self._sim = None
            self.sim.stop(timeout=10)
            self.sim = None
        for ref in self.managers.values():
            ref.stop(timeout=10)
        self.managers.clear()
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    def _broker_event(self, e) -> None:
        if isinstance(e, Connected | ConnectionFailed | Disconnected):
            self.system.bus.publish([e])

    def _deliver(self, ref, ticks: list[Tick]) -> None:
        r = Reply()
        ref.tell((Ticks(ticks), r))
        r.get(self.config.ledger.call_timeout_s)

    def _ask(self, account_id: str, msg: Any, timeout: float | None = None) -> Any:
        r = Reply()
        self.managers[account_id].tell((msg, r))
        return r.get(timeout or self.config.ledger.call_timeout_s)

    # -- accounts ---------------------------------------------------------------------

    def account_for(self, profile_id: str) -> str:
        return self.account_of.get(profile_id) or self.config.brokers.default_account

    def check_account(self, account_id: str | None) -> None:
        if account_id is not None and account_id not in self.config.brokers.accounts:
            raise InvalidArgument("account_id", f"no broker account {account_id!r} is "
                                                "configured")

    def profile_created(self, profile_id: str, account_id: str | None,
                        currency: str) -> None:
        self.account_of[profile_id] = account_id
        self.capital_of[profile_id] = self._capital_account(account_id, currency)

    # -- the accounts' capital, divided among their profiles ------------------------

    def _capital_account(self, account_id: str | None, currency: str) -> str | None:
        aid = account_id or self.config.brokers.default_account
        acfg = self.config.brokers.accounts.get(aid)
        return aid if acfg is not None and acfg.currency == currency else None

    def claim(self, account_id: str | None, currency: str,
              amount: Decimal) -> tuple[str, int] | None:
        """Blocking: claim `amount` of the account's unallocated cash (raises `Denied`
        INSUFFICIENT_CAPITAL); settle the claim with `settle_claim` whatever happens next."""
        aid = self._capital_account(account_id, currency)
        if aid is None:
            return None
        return aid, self._ask(aid, ClaimCapital("", amount))

    def settle_claim(self, claim: tuple[str, int], booked: Decimal) -> None:
        aid, claim_id = claim
        _tell(self.managers[aid], SettleClaim(claim_id, booked))

    def transfer(self, profile_id: str, cmd, callback=None) -> Reply:
        """A deposit (after claiming its amount from the account) or a withdrawal (which
        gives it back); non-blocking."""
        reply = Reply(callback)
        aid = self.capital_of.get(profile_id)
        if aid is None:  # not on an account's capital (or not a profile: the ledger says)
            self.system.submit(profile_id, cmd, relay(reply))
            return reply
        ref = self.managers[aid]
        if isinstance(cmd, m.Withdraw):
            def withdrawn(r: Reply) -> None:
                out, error = r.result()
                if error is None and not out.reused:
                    _tell(ref, ReturnCapital(-out.result.amount))
                reply.finish_with(out, error)

            self.system.submit(profile_id, cmd, withdrawn)
            return reply
        try:
            places = self.config.places(self.config.brokers.accounts[aid].currency)
            amount = parse_decimal(cmd.amount, "amount", places=places)
        except Exception as exc:
            reply.fail(exc)
            return reply

        def claimed(r: Reply) -> None:
            claim_id, error = r.result()
            if isinstance(error, Denied):
                # no cash left for a new deposit; a repeat of one already made is still
                # answered with its first result
                again = msgspec.structs.replace(cmd, repeat_only=True, refusal=error.denial)
                self.system.submit(profile_id, again, relay(reply))
                return
            if error is not None:
                reply.fail(error)
                return

            def deposited(d: Reply) -> None:
                out, err = d.result()
                # booked unless it surely was not: a refusal, a repeat; an unknown
                # outcome keeps the claim (the account looks fuller, never emptier)
                refused = isinstance(err, Denied | Conflict | InvalidArgument | NotFound)
                booked = Decimal(0) if refused or (err is None and out.reused) else amount
                _tell(ref, SettleClaim(claim_id, booked))
                reply.finish_with(out, err)

            self.system.submit(profile_id, cmd, deposited)

        try:
            ref.tell((ClaimCapital(profile_id, amount), Reply(claimed)))
        except Exception as exc:  # the account manager has stopped
            reply.fail(Unavailable(f"broker account {aid!r} is not running: {exc}"))
        return reply

    def account_info(self, account_id: str):
        return self._ask(account_id, Info())

    def _require_connected(self, account_id: str) -> None:
        st = self.status[account_id]
        if st.state != "CONNECTED":
            raise Unavailable(f"broker account {account_id!r} is {st.state.lower()}: orders "
                              "are refused", {"account_id": account_id, "state": st.state})

    # -- the market -------------------------------------------------------------------

    def price(self, symbol: str) -> Tick:
        tick = self.board.get(symbol)
        if tick is None:
            raise NotFound("symbol", symbol)
        return tick

    def advance(self, n: int = 1, timeout: float = 120.0) -> int:
        """Step mode: run `n` ticks and wait until everything they caused is committed."""
        done = self.sim.proxy().advance(n).get(timeout=timeout)
        self.settle(timeout)
        return done

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every account manager has handled its mailbox and every booking it
        sent is committed, and the ledgers have marked the last ticks to market."""
        self.settle_accounts(list(self.managers), timeout, observations=True)

    def settle_accounts(self, accounts: list[str], timeout: float = 30.0, *,
                        observations: bool = False) -> None:
        """`settle`, for these accounts' managers."""
        deadline = time.monotonic() + timeout

        def quiet() -> bool:
            return (all(self.status[aid].pending == 0 for aid in accounts)
                    and (not observations or self.safety.observing == 0))

        while True:
            for aid in accounts:
                self._ask(aid, Sync(), timeout)
            if quiet():
                # one more round: a booking's commit may have queued a new order
                for aid in accounts:
                    self._ask(aid, Sync(), timeout)
                if quiet():
                    return
            if time.monotonic() > deadline:
                raise Unavailable("trading did not settle in time")
            time.sleep(0.0005)

    # -- cancels and closes -----------------------------------------------------------

    def cancel_order(self, profile_id: str, order_id: str) -> m.OrderCapital:
        """Blocking: cancel what is left of a working order; answered once the release
        of its capital is committed."""
        o = self._store().get_order(profile_id, order_id)
        if o is None:
            raise NotFound("order", order_id)
        if o.status not in m.ORDER_OPEN_STATES:
            raise Conflict(f"order {order_id!r} is {o.status}", {"order_id": order_id,
                                                                  "status": o.status})
        if o.account_id is None:
            return self.system.end_order(profile_id, order_id, "CANCELED")
        try:
            return self._ask(o.account_id, Cancel(profile_id, order_id)).result
        except NotFound:  # filled or ended in the meantime
            o = self._store().get_order(profile_id, order_id)
            raise Conflict(f"order {order_id!r} is {o.status if o else 'gone'}",
                           {"order_id": order_id}) from None

    def close_position(self, profile_id: str, position_id: str, reason: str = "manual"):
        """Blocking: ask the broker to close a position at market. The exit is booked
        when it fills (the next tick for the paper broker)."""
        if reason not in CLOSE_REASONS:
            reason = "manual"
        p = self._store().get_position(profile_id, position_id)
        if p is None:
            raise NotFound("position", position_id)
        if p.status != "OPEN":
            raise Conflict(f"position {position_id!r} is {p.status}",
                           {"position_id": position_id, "status": p.status})
        if p.account_id is None:
            raise Conflict(f"position {position_id!r} is not held at a broker: close it "
                           "with an exit fill", {"position_id": position_id})
        # recorded first: a restart before the exit fills asks the broker again
        p = self.system.submit(profile_id, m.RequestClose(
            position_id=position_id, reason=reason)).get(
                self.system.config.ledger.call_timeout_s).result
        try:
            self._ask(p.account_id, Close(profile_id, position_id, reason))
        except NotFound:  # its take-profit or stop-loss came first
            raise Conflict(f"position {position_id!r} is no longer open at the broker",
                           {"position_id": position_id, "status": "CLOSED"}) from None
        return p

    # -- reads ------------------------------------------------------------------------

    def _known(self, profile_id: str) -> None:
        if not self.system.registry.knows(profile_id):
            raise NotFound("profile", profile_id)

    def _store(self):
        if self.oms_store is None:
            raise Unavailable("storage is off: orders and positions are not kept")
        return self.oms_store

    def get_order(self, profile_id: str, order_id: str) -> m.OrderCapital:
        o = self._store().get_order(profile_id, order_id)
        if o is None:
            raise NotFound("order", order_id)
        return o

    def list_orders(self, profile_id: str, *, status: str | None = None, **filters):
        self._known(profile_id)
        if status is not None and status not in ORDER_FILTERS:
            raise InvalidArgument("status", f"status must be one of {list(ORDER_FILTERS)}")
        return self._store().list_orders(profile_id, status=status, **filters)

    def list_positions(self, profile_id: str, *, status: str | None = None, **filters):
        self._known(profile_id)
        if status is not None and status not in ("OPEN", "CLOSED"):
            raise InvalidArgument("status", "status must be OPEN or CLOSED")
        return self._store().list_positions(profile_id, status=status, **filters)

    def stats(self, profile_id: str | None = None, group_by: str | None = None,
              only: frozenset[str] | None = None) -> tuple[Any, dict[str, Any] | None]:
        if profile_id is not None:
            self._known(profile_id)
        ids = [profile_id] if profile_id is not None else (
            None if only is None else sorted(only))
        positions = self._store().positions_for_stats(ids)
        snaps = self.system.store.snapshots(ids)
        initial = sum((b.allocated for b in snaps.values()), Decimal(0)) or None
        overall = compute_stats(positions, initial_equity=initial)
        groups = None
        if group_by is not None:
            groups = group_stats(positions, group_by, initial_equity=initial)
        return overall, groups
