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

from actors import messages as m
from actors.account import (
    AccountManagerActor,
    AccountStatus,
    Cancel,
    ClaimCapital,
    ClaimSlot,
    Close,
    Info,
    Restore,
    ReturnCapital,
    SettleClaim,
    SettleSlot,
    SlotQuery,
    Sync,
    Ticks,
    new_order_listener,
)
from actors.account_risk import AccountRisk
from actors.alerts import raise_alert
from actors.audit_log import SignalAuditLog
from actors.config import ConfigError
from actors.errors import Conflict, Denial, Denied, InvalidArgument, NotFound, Unavailable
from actors.ids import new_id
from actors.money import parse_decimal
from actors.orders import (
    CLOSE_REASONS,
    ORDER_TYPES,
    OrderSpec,
    SignalPolicy,
    check_protection,
    entry_reference,
    max_fill_price,
    order_reservation,
    parse_side,
    parse_signal,
    parse_symbol,
    protective_crossed,
)
from actors.reply import Reply, relay
from actors.risk import Check, load_timezone
from actors.safety import Safety
from actors.simulator import MarketSimulatorActor, Tick
from actors.stats import compute_stats, group_stats
from actors.symbols import CLAIMED, REFUSED, SymbolSlots
from brokers.base import Connected, ConnectionFailed, Disconnected, load_adapter

ORDER_STATUSES = ("OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED")
#: what `order.list` filters by: a status, or CLOSED (every order no longer working)
ORDER_FILTERS = (*ORDER_STATUSES, "CLOSED")
DEFAULT_TAKER_FEE = Decimal("0.0004")
DEFAULT_MAKER_FEE = Decimal("0.0002")


def _new_symbol_places(price: Decimal) -> int:
    """Price places of a symbol first seen at `price` (as the simulator chooses them)."""
    return min(8, max(2, -price.normalize().as_tuple().exponent))


class Trading:
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

    def _on_recorded(self, events) -> None:
        """A bus listener: an order recorded for a symbol with no market starts one, at
        the order's price (a refused entry never does)."""
        for e in events:
            if not isinstance(e, m.OrderCapitalReserved) or e.order.account_id is None:
                continue
            o = e.order
            if self.symbols.known(o.symbol):
                continue
            price = o.price or o.max_price
            if price is not None and self.symbols.add(o.symbol) and self._sim is not None:
                self._sim.ensure_symbol(o.symbol, price)  # a future: never waited on

    def _claim_symbol(self, symbol: str, reply: Reply) -> tuple[Reply, Denial | None]:
        """Claim a market for an entry in `symbol`: (the reply to answer through, which
        releases a claimed slot first; the refusal when no new symbol may be added)."""
        claim = self.symbols.claim(symbol)
        if claim == REFUSED:
            return reply, Denial(
                "RISK_REJECTED", f"no market for {symbol!r}: " + (
                    "new symbols are off ([simulator] new_symbols = false)"
                    if not self.symbols.allow_new else
                    f"the simulator already has its {self.symbols.max_symbols} symbols "
                    "([simulator] max_symbols)"),
                {"reason": "UNKNOWN_SYMBOL", "limit": self.symbols.max_symbols,
                 "value": self.symbols.count()})
        if claim != CLAIMED:
            return reply, None
        outer = reply

        def released(r: Reply) -> None:
            self.symbols.release(symbol)
            outer.finish_with(*r.result())

        return Reply(released), None

    def _places(self, symbol: str, price: Decimal) -> tuple[int, int]:
        spec = self.config.simulator.symbols.get(symbol)
        if spec is not None:
            return spec.price_places, spec.qty_places
        return _new_symbol_places(price), 6

    def _fees(self, account_id: str) -> tuple[Decimal, Decimal]:
        s = self.config.brokers.accounts[account_id].settings
        return (Decimal(str(s.get("taker_fee", DEFAULT_TAKER_FEE))),
                Decimal(str(s.get("maker_fee", DEFAULT_MAKER_FEE))))

    # -- signals ----------------------------------------------------------------------

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is None:
            o = self.config.oms
            self.audit = SignalAuditLog(o.audit_log, o.audit_max_bytes, o.audit_backups)
        self.audit.write(record)

    def submit_signal(self, profile_id: str, raw: dict[str, Any],
                      callback: Callable[[Reply], None] | None = None) -> Reply:
        """Audit, then trade a signal. The reply resolves to the answer map of
        `signal.submit`; only a malformed signal fails (`InvalidArgument`)."""
        reply = Reply(callback)
        try:
            self._audit({"received_at": self.clock.now(), "profile_id": profile_id,
                         "signal": raw})
            answer = self._signal_gate(profile_id)
            if answer is not None:
                parse_signal(raw)
                reply.resolve(answer)
                return reply
            signal = parse_signal(raw)
            policy = self._signal_policy(profile_id, signal)
        except Exception as exc:
            reply.fail(exc)
            return reply
        answer, refused = self._claim_symbol(signal.symbol, reply)
        if refused is not None and policy.blocked is None:
            policy = msgspec.structs.replace(policy, blocked="UNKNOWN_SYMBOL")
        self._route_signal(profile_id, signal, policy, answer)
        return reply

    def _route_signal(self, profile_id: str, signal, policy: SignalPolicy,
                      reply: Reply) -> None:
        if policy.blocked is None and policy.account_id in self.slot_limited:
            def claimed(claim_id: int | None, denial: Denial | None) -> None:
                p = policy if denial is None else msgspec.structs.replace(
                    policy, blocked=denial.details["reason"])
                self._send_signal(profile_id, signal, p, reply, claim_id)

            self._claim_slot(policy.account_id, profile_id, signal.symbol, claimed, reply)
        else:
            self._send_signal(profile_id, signal, policy, reply, None)

    def _signal_policy(self, profile_id: str, signal) -> SignalPolicy:
        account = self.account_for(profile_id)
        price_places, qty_places = self._places(signal.symbol, signal.price)
        tick = self.board.get(signal.symbol)
        order_id = new_id("ord")
        return SignalPolicy(
            order_id=order_id, position_id=order_id.replace("ord_", "pos_", 1),
            account_id=account, tp_pct=self.config.oms.tp_pct,
            sl_pct=self.config.oms.sl_pct,
            risk_per_trade_pct=self.config.oms.risk_per_trade_pct,
            reserve_buffer_pct=self.config.oms.reserve_buffer_pct,
            taker_fee=self._fees(account)[0], price_places=price_places,
            qty_places=qty_places,
            blocked="BROKER_DISCONNECTED" if self.status[account].state == "GAVE_UP"
            else None, bid=None if tick is None else tick.bid,
            ask=None if tick is None else tick.ask)

    def _send_signal(self, profile_id: str, signal, policy: SignalPolicy, reply: Reply,
                     claim_id: int | None) -> None:
        if signal.signal_id is None and policy.blocked is not None:
            reply.resolve(_signal_answer(None, reused=False, reason=policy.blocked))
            return
        answered = relay(reply, lambda out: _signal_answer(out.result, reused=out.reused))
        if claim_id is not None:
            answered = self._settling(policy.account_id, claim_id, answered)
        self.system.submit(profile_id, m.SubmitSignal(
            signal=signal, policy=policy, cause=signal.signal_id or policy.order_id),
            answered)

    # -- account-wide open position limits ------------------------------------------

    def _claim_slot(self, account_id: str, profile_id: str, symbol: str,
                    then: Callable[[int | None, Denial | None], None], reply: Reply) -> None:
        """Claim an open position slot of the account, then `then(claim_id, None)`, or
        `then(None, denial)` when the account is full; `reply` fails on anything else."""

        def claimed(r: Reply) -> None:
            # runs on the account manager's thread: nothing may escape into it
            claim_id, error = r.result()
            try:
                if isinstance(error, Denied):
                    then(None, error.denial)
                elif error is not None:
                    reply.fail(error)
                else:
                    then(claim_id, None)
            except Exception as exc:
                logger.exception("entry after a slot claim failed")
                reply.fail(Unavailable(f"the entry could not be sent: {exc}"))

        try:
            self.managers[account_id].tell((ClaimSlot(profile_id, symbol), Reply(claimed)))
        except Exception as exc:  # the account manager has stopped
            reply.fail(Unavailable(f"broker account {account_id!r} is not running: {exc}"))

    def _settling(self, account_id: str, claim_id: int,
                  callback: Callable[[Reply], None]) -> Callable[[Reply], None]:
        """Wrap a ledger reply callback: settle the slot claim first. A recorded order
        told the manager of itself (`Place`) before this runs, so the slot is held by
        the order when the claim ends."""

        def settle(r: Reply) -> None:
            try:
                ref = self.managers.get(account_id)  # gone when shutting down
                if ref is not None:
                    _tell(ref, SettleSlot(claim_id))
            finally:
                callback(r)

        return settle

    def _signal_gate(self, profile_id: str) -> dict[str, Any] | None:
        if not self.system.registry.knows(profile_id):
            raise NotFound("profile", profile_id)
        if not self.config.oms.enabled:
            return _signal_answer(None, reused=False, reason="OMS_DISABLED", oms=False)
        return None

    # -- what-if ---------------------------------------------------------------------

    def risk_check(self, profile_id: str, raw: dict[str, Any],
                   callback: Callable[[Reply], None] | None = None) -> Reply:
        """`risk.check`: every check a signal like `raw` would meet, the account-wide
        ones included; nothing is audited, reserved, counted or recorded."""
        reply = Reply(callback)
        try:
            self._known(profile_id)
            signal = parse_signal(raw)
            policy = self._signal_policy(profile_id, signal)
        except Exception as exc:
            reply.fail(exc)
            return reply
        account = policy.account_id

        def answer(result: dict[str, Any], extra: list) -> None:
            # in the order a real entry meets them: the account's slots come first
            checks = extra + result["checks"]
            if not self.symbols.admits(signal.symbol):
                checks.insert(0, Check("market", "UNKNOWN_SYMBOL", False,
                                       self.symbols.max_symbols, self.symbols.count()))
            if policy.blocked is not None:
                checks.insert(0, Check("broker", policy.blocked, False, "CONNECTED",
                                       self.status[account].state))
            if not self.config.oms.enabled:
                checks.insert(0, Check("oms", "OMS_DISABLED", False, True, False))
            failed = [c for c in checks if not c.ok]
            reply.resolve({**result, "profile_id": profile_id, "account_id": account,
                           "allowed": not failed,
                           "reason": failed[0].code if failed else None,
                           "checks": [c.to_map() for c in checks]})

        def checked(r: Reply) -> None:
            out, error = r.result()
            if error is not None:
                reply.fail(error)
                return
            result = out.result
            if account not in self.slot_limited:
                answer(result, [])
                return

            def counted(q: Reply) -> None:
                extra, err = q.result()
                if err is not None:
                    reply.fail(err)
                else:
                    answer(result, extra)

            try:
                self.managers[account].tell((SlotQuery(signal.symbol), Reply(counted)))
            except Exception as exc:
                reply.fail(Unavailable(f"broker account {account!r} is not running: {exc}"))

        self.system.submit(profile_id, m.CheckRisk(signal=signal, policy=policy), checked)
        return reply

    # -- orders -----------------------------------------------------------------------

    def submit_order(self, profile_id: str, *, client_order_id: str, symbol: str, side: str,
                     type: str = "MARKET", qty: Any, price: Any = None, tp_price: Any = None,
                     sl_price: Any = None, reservation_id: str | None = None,
                     callback: Callable[[Reply], None] | None = None) -> Reply:
        """Record an order (capital reserved) and send it to the account's broker. The
        reply resolves to an Outcome whose result is the order (or, for a repeat of a
        finished order, its id)."""
        reply = Reply(callback)
        try:
            spec, amount = self._order_spec(profile_id, client_order_id, symbol, side, type,
                                            qty, price, tp_price, sl_price, reservation_id)
        except Exception as exc:
            reply.fail(exc)
            return reply
        outer = reply
        reply, refused = self._claim_symbol(spec.symbol, reply)
        cmd = m.PlaceOrder(spec=spec, amount=amount, cause=client_order_id)
        if refused is not None:  # a repeat of an order made before is still answered
            self.system.submit(profile_id, msgspec.structs.replace(cmd, refusal=refused),
                               relay(reply))
        elif spec.account_id in self.slot_limited:
            def claimed(claim_id: int | None, denial: Denial | None) -> None:
                if denial is not None:  # a repeat of an order made before is still it
                    self.system.submit(profile_id, msgspec.structs.replace(
                        cmd, refusal=denial), relay(reply))
                else:
                    self.system.submit(profile_id, cmd, self._settling(
                        spec.account_id, claim_id, relay(reply)))

            self._claim_slot(spec.account_id, profile_id, spec.symbol, claimed, reply)
        else:
            self.system.submit(profile_id, cmd, relay(reply))
        return outer

    def _order_spec(self, profile_id, client_order_id, symbol, side, type, qty, price,
                    tp_price, sl_price, reservation_id) -> tuple[OrderSpec, Decimal]:
        self._known(profile_id)
        if not self.config.oms.enabled:
            raise Denied(Denial("RISK_REJECTED", "the order management system is disabled "
                                "([oms] enabled = false): no orders are taken",
                                {"reason": "OMS_DISABLED", "limit": False, "value": True}))
        side = parse_side(side)
        if type not in ORDER_TYPES:
            raise InvalidArgument("type", f"type must be one of {list(ORDER_TYPES)}")
        symbol = parse_symbol(symbol)
        q = parse_decimal(qty, "qty")
        px = None if price is None else parse_decimal(price, "price")
        tp = None if tp_price is None else parse_decimal(tp_price, "tp_price")
        sl = None if sl_price is None else parse_decimal(sl_price, "sl_price")
        if type == "LIMIT" and px is None:
            raise InvalidArgument("price", "a LIMIT order needs a price")
        tick = self.board.get(symbol)
        bid, ask = (tick.bid, tick.ask) if tick is not None else (None, None)
        reference = px
        if reference is None:
            if tick is None:
                raise InvalidArgument("price", f"no market price for {symbol!r} yet: give "
                                               "a price")
            reference = ask if side == "BUY" else bid
        check_protection(side, reference, tp, sl)
        if type == "MARKET" and (crossed := protective_crossed(side, tp, sl, bid, ask)):
            level = tp if crossed == "tp_price" else sl
            market = bid if side == "BUY" else ask
            raise InvalidArgument(crossed, f"{crossed} {level} is already crossed by the "
                                           f"market ({'bid' if side == 'BUY' else 'ask'} "
                                           f"{market}): it would close the position on its "
                                           "first tick")
        price_places, qty_places = self._places(symbol, reference)
        if q != q.quantize(Decimal(1).scaleb(-qty_places)):
            raise InvalidArgument("qty", f"qty has more than {qty_places} decimal places "
                                         f"for {symbol}")
        account = self.account_for(profile_id)
        self._require_connected(account)
        taker, maker = self._fees(account)
        places = self.config.places(self.config.brokers.accounts[account].currency)
        if type == "MARKET":
            # the worse of the given price and the market's, plus the slippage room: the
            # broker fills it at most at `cap`, so it never costs more than it reserved
            buffer = self.config.oms.reserve_buffer_pct
            ref = entry_reference(side, reference, bid, ask)
            amount = order_reservation(q, ref, buffer, taker, places)
            cap = max_fill_price(q, ref, buffer, taker, amount, price_places, places)
        elif side == "BUY":  # fills at its limit or lower
            amount = order_reservation(q, px, Decimal(0), maker, places)
            cap = px
        else:  # a SELL limit fills at its limit or higher: at most at the market's now
            cap = entry_reference(side, px, bid, ask)
            amount = order_reservation(q, cap, Decimal(0), maker, places)
        order_id = new_id("ord")
        spec = OrderSpec(order_id=order_id, position_id=order_id.replace("ord_", "pos_", 1),
                         symbol=symbol, side=side, type=type, qty=q, price=px,
                         tp_price=tp, sl_price=sl, client_order_id=client_order_id,
                         account_id=account, reservation_id=reservation_id,
                         ref_price=reference, max_price=cap)
        return spec, amount

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


def _tell(ref, msg: Any) -> None:
    """Tell an account manager something that needs no answer; one that has stopped
    (shutting down) has nothing left to count."""
    try:
        ref.tell((msg, Reply()))
    except Exception as exc:
        logger.warning("account manager gone; {} dropped: {}", type(msg).__name__, exc)


def _signal_answer(rec: m.SignalRecord | None, *, reused: bool, reason: str | None = None,
                   oms: bool = True) -> dict[str, Any]:
    if rec is None:
        return {"received": True, "oms_enabled": oms, "risk_ok": False,
                "risk_reason": reason, "order_id": None, "position_id": None,
                "tp_price": None, "sl_price": None, "qty": None, "reused": reused}
    return {"received": True, "oms_enabled": oms, "risk_ok": rec.risk_ok,
            "risk_reason": rec.risk_reason, "order_id": rec.order_id,
            "position_id": rec.position_id, "tp_price": rec.tp_price,
            "sl_price": rec.sl_price, "qty": rec.qty, "reused": reused}
