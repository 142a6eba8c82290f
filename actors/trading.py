"""`Trading`: the order management side of a `System` -- the market simulator, the
start of the broker accounts' managers (`actors.accounts` holds them), the signal audit
log, and the calls of the order ops.

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
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from capflow.actors import trading_stops
from capflow.actors.account_messages import (
    Cancel,
    Close,
    Reconcile,
    Restore,
    Ticks,
    new_order_listener,
)
from capflow.actors.accounts import Accounts, Submit
from capflow.actors.alerts import CRITICAL, WARNING, Alert, raise_alert
from capflow.actors.audit_log import SignalAuditLog
from capflow.actors.bus import EventBus
from capflow.actors.model import messages as m
from capflow.actors.model.errors import Conflict, InvalidArgument, NotFound, Unavailable
from capflow.actors.model.orders import CLOSE_REASONS
from capflow.actors.model.stats import profiles_stats
from capflow.actors.model.symbols import SymbolSlots
from capflow.actors.model.ticks import Tick
from capflow.actors.reply import Reply
from capflow.actors.safety import Safety
from capflow.actors.simulator import MarketSimulatorActor
from capflow.actors.trading_amend import AmendFlow
from capflow.actors.trading_entries import EntryFlow
from capflow.brokers.events import Connected, ConnectionFailed, Disconnected, PricesStale

ORDER_STATUSES = ("OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED")
#: what `order.list` filters by: a status, or CLOSED (every order no longer working)
ORDER_FILTERS = (*ORDER_STATUSES, "CLOSED")


class Trading(EntryFlow, AmendFlow):
    """The trading side. Its dependencies are given, none of them the System: the
    configuration and clock, the broker `accounts`, `to_ledger` (submit a command to a
    profile's ledger), the event `bus`, `knows_profile` and `snapshots` (the profiles'
    stored ledger figures). `safety` (the kill switch that acts, `actors.safety`) is
    set by whoever builds both, before `start`."""

    def __init__(self, config, clock, accounts: Accounts, *, to_ledger: Submit,
                 bus: EventBus, knows_profile: Callable[[str], bool],
                 snapshots: Callable[..., dict[str, Any]]):
        self.config = config
        self.clock = clock
        self.accounts = accounts
        self.to_ledger = to_ledger
        self.bus = bus
        self.knows_profile = knows_profile
        self.snapshots = snapshots
        self.safety: Safety | None = None
        self.sim = None  # the simulator's handle (actors.simulator.Simulator)
        self.board: dict[str, Tick] = {}
        self.audit: SignalAuditLog | None = None
        self.oms_store = None
        self._unsubscribe: list[Callable[[], None]] = []
        #: the symbols with a market, and the cap on new ones
        self.symbols: SymbolSlots | None = None
        #: the symbols priced by a venue (an account's `VenueTicks`), not simulated
        self.venue_owned: set[str] = set()
        #: accounts connected once in this run: a connection failure after that is a drop
        self._was_connected: set[str] = set()
        self._simulated_warned: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------

    def start(self, oms_store, profiles, control_store=None) -> None:
        """Start the market and a manager for every broker account, and give the
        managers back the working orders and open positions that are stored."""
        cfg = self.config
        accounts, safety = self.accounts, self.safety
        accounts.load(profiles)
        self.oms_store = oms_store
        safety.load(control_store, profiles)
        # the symbols of an account priced by its venue are not simulated as well
        self.venue_owned = accounts.venue_symbols()
        scfg = msgspec.structs.replace(cfg.simulator, symbols={
            s: spec for s, spec in cfg.simulator.symbols.items()
            if s not in self.venue_owned})
        self.sim, self.board = MarketSimulatorActor.start_with_board(
            scfg, self.clock, publish=self.bus.publish)
        sim = self.sim
        self.symbols = SymbolSlots(
            () if scfg.replay else [*scfg.symbols, *self.venue_owned], self.board,
            max_symbols=scfg.max_symbols, allow_new=scfg.new_symbols)
        self._unsubscribe.append(self.bus.subscribe(self._on_recorded))
        self._unsubscribe.append(self.bus.subscribe(safety.on_events))
        accounts.start(self.snapshots(), book=self.to_ledger, publish=self.bus.publish,
                       saved_risk=safety.saved_risk, on_breach=safety.breach,
                       on_risk_saved=safety.save_risk, on_unbooked=safety.unbooked,
                       on_prices=self._on_prices, rows=oms_store)
        for aid, ref in accounts.managers.items():
            self._unsubscribe.append(self.bus.subscribe(new_order_listener(aid, ref)))
            sim.subscribe(aid, functools.partial(self._deliver, ref)).get(timeout=10)
            if oms_store is not None:
                orders, positions = oms_store.open_book(aid)
                if orders or positions:
                    accounts.ask(aid, Restore(orders, positions), 60)
                    safety.restored(aid, orders, positions, profiles)
            # what capflow holds is restored: a live account may reconcile from now on
            accounts.tell(aid, Reconcile(wait=False))
        if cfg.simulator.mode == "realtime":
            sim.start_realtime().get(timeout=10)
        logger.info("trading: {} account(s) {}, simulator in {} mode, OMS {}",
                    len(accounts.managers), sorted(accounts.managers), cfg.simulator.mode,
                    "on" if cfg.oms.enabled else "off (signals are audited only)")

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.sim is not None:
            self.sim.stop(timeout=10)
            self.sim = None
        self.accounts.stop()
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    def _deliver(self, ref, ticks: list[Tick]) -> None:
        r = Reply()
        ref.tell((Ticks(ticks), r))
        r.get(self.config.ledger.call_timeout_s)

    def _on_prices(self, e) -> None:
        """A venue's prices (on its account manager's thread): its ticks take the path the
        simulator's take -- the board (quotes, entries' prices, concentration), the bus
        (the ``market`` events; the ledgers marked to market, so valuation and
        breakers) -- and its stale periods are alerted and shown in the health."""
        if isinstance(e, PricesStale):
            self._prices_stale(e)
            return
        if isinstance(e, Connected | ConnectionFailed | Disconnected):
            self._connection(e)
            return
        ticks = []
        for t in e.ticks:
            if t.symbol not in self.venue_owned:
                if t.symbol in self.board:  # the simulator has it: one source per symbol
                    if t.symbol not in self._simulated_warned:
                        self._simulated_warned.add(t.symbol)
                        logger.warning(
                            "account {}: {} is simulated, so its venue prices are not "
                            "used for it: list it in [brokers.accounts.{}] symbols",
                            e.account_id, t.symbol, e.account_id)
                    continue
                self.venue_owned.add(t.symbol)
            self.board[t.symbol] = t
            ticks.append(t)
        if ticks:
            self.bus.publish(ticks)

    def _connection(self, e) -> None:
        """An account's connection changed: once it has been connected, a drop (the
        adapter retrying, or giving up) degrades the health until it is connected again,
        with a ``connection_lost`` alert once per drop."""
        key = ("connection", e.account_id)
        safety = self.safety
        if isinstance(e, Connected):
            self._was_connected.add(e.account_id)
            with safety._lock:
                was = safety.degraded.pop(key, None)
            if was is not None:
                logger.info("account {}: connected again", e.account_id)
            return
        if e.account_id not in self._was_connected:
            return  # still connecting at start: the connection's own events say how
        error = e.error if isinstance(e, ConnectionFailed) else e.reason
        text = (f"account {e.account_id}: connection lost ({error[:200]}): entries "
                f"refused" + ("; retrying" if isinstance(e, ConnectionFailed)
                              else "; gave up: restart the account"))
        with safety._lock:
            first = key not in safety.degraded
            safety.degraded[key] = text
        if first or isinstance(e, Disconnected):
            raise_alert(self.bus.publish, Alert(
                kind="connection_lost", severity=CRITICAL, scope="account",
                target=e.account_id, reason=text, ts=e.ts,
                details={"account_id": e.account_id, "error": error,
                         "gave_up": isinstance(e, Disconnected)}))

    def _prices_stale(self, e) -> None:
        key = ("prices", e.account_id)
        safety = self.safety
        if not e.stale:
            with safety._lock:
                safety.degraded.pop(key, None)
            logger.info("account {}: venue prices arrive again; entries are taken",
                        e.account_id)
            return
        text = (f"account {e.account_id}: venue prices stale (none for "
                f"{e.age_s or 0:.1f} s): entries refused, take-profit / stop-loss not watched")
        with safety._lock:
            safety.degraded[key] = text
        raise_alert(self.bus.publish, Alert(
            kind="prices_stale", severity=CRITICAL if e.unwatched else WARNING,
            scope="account", target=e.account_id,
            reason=f"no prices from the venue for {e.age_s or 0:.1f} s: new entries are "
                   "refused (STALE_PRICES), exits are taken; the take-profit / stop-loss "
                   f"of {len(e.unwatched)} position(s) are not watched",
            ts=e.ts, details={"account_id": e.account_id, "age_s": e.age_s,
                              "unwatched": list(e.unwatched)}))

    # -- the market -------------------------------------------------------------------

    def mark(self, symbol: str) -> Decimal | None:
        """The last price of `symbol`; None before it has one."""
        tick = self.board.get(symbol)
        return None if tick is None else tick.last

    def price(self, symbol: str) -> Tick:
        tick = self.board.get(symbol)
        if tick is None:
            raise NotFound("symbol", symbol)
        return tick

    def advance(self, n: int = 1, timeout: float = 120.0) -> int:
        """Step mode: run `n` ticks and wait until everything they caused is committed."""
        done = self.sim.advance(n).get(timeout=timeout)
        self.settle(timeout)
        return done

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every account manager has handled its mailbox and every booking it
        sent is committed, and the ledgers have marked the last ticks to market."""
        self.accounts.settle(None, timeout, also=lambda: self.safety.observing == 0)

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
            return self._call(profile_id, m.EndOrder(order_id=order_id,
                                                     status="CANCELED")).result
        try:
            return self.accounts.ask(o.account_id, Cancel(profile_id, order_id)).result
        except NotFound:  # filled or ended in the meantime
            o = self._store().get_order(profile_id, order_id)
            raise Conflict(f"order {order_id!r} is {o.status if o else 'gone'}",
                           {"order_id": order_id}) from None

    def open_at_broker(self, profile_id: str, position_id: str, otherwise: str, *,
                       closing: bool = False):
        """The stored position, open and held at a broker account, else `NotFound` or
        `Conflict` (`details.status`; `otherwise` says what to do with a position no
        broker holds). With `closing`, one whose close was asked for is ``CLOSING``."""
        p = self._store().get_position(profile_id, position_id)
        if p is None:
            raise NotFound("position", position_id)
        status = p.status
        if closing and status == "OPEN" and p.close_requested is not None:
            status = "CLOSING"
        if status != "OPEN":
            raise Conflict(f"position {position_id!r} is {status}",
                           {"position_id": position_id, "status": status})
        if p.account_id is None:
            raise Conflict(f"position {position_id!r} is not held at a broker: {otherwise}",
                           {"position_id": position_id})
        return p

    def close_position(self, profile_id: str, position_id: str, reason: str = "manual"):
        """Blocking: ask the broker to close a position at market. The exit is booked
        when it fills (the next tick for the paper broker)."""
        if reason not in CLOSE_REASONS:
            reason = "manual"
        self.open_at_broker(profile_id, position_id, "close it with an exit fill")
        # recorded first: a restart before the exit fills asks the broker again
        p = self._call(profile_id, m.RequestClose(position_id=position_id,
                                                  reason=reason)).result
        try:
            self.accounts.ask(p.account_id, Close(profile_id, position_id, reason))
        except NotFound:  # its take-profit or stop-loss came first
            raise Conflict(f"position {position_id!r} is no longer open at the broker",
                           {"position_id": position_id, "status": "CLOSED"}) from None
        return p

    def set_stops(self, profile_id: str, position_id: str, **stops):
        """Blocking: `position.set_stops` (actors/trading_stops.py)."""
        return trading_stops.set_stops(self, profile_id, position_id, **stops)

    # -- reads ------------------------------------------------------------------------

    def _call(self, profile_id: str, cmd: m.Command):
        return self.to_ledger(profile_id, cmd).get(self.config.ledger.call_timeout_s)

    def _known(self, profile_id: str) -> None:
        if not self.knows_profile(profile_id):
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
        snaps = self.snapshots(ids)
        overall, groups, _ = profiles_stats(positions, (b.allocated for b in snaps.values()),
                                            group_by)
        return overall, groups
