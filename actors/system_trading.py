"""`TradingCalls`: the trading side of a `System` -- how it is built, and its embedded
API: the kill switch (global, per account, flatten), breakers and what-ifs, signals,
orders, positions and the simulated market. A mixin of `actors.system.System`, whose
`submit`, `registry`, `store`, `bus`, `journal` and `config` it uses; `System` is the
only class that inherits it.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from capflow.actors.accounts import Accounts
from capflow.actors.allocation_service import AllocationService
from capflow.actors.model import messages as m
from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.risk import GlobalState
from capflow.actors.reply import Reply
from capflow.actors.safety import Safety
from capflow.actors.trading import Trading


class TradingCalls:
    def _start_trading(self, instruments, oms_store, profiles, control_store) -> None:
        """Build the trading side and start it. Each part is given what it needs, and
        none of them the System: the broker accounts (`Accounts`) stand alone; `Trading`
        and the allocation calls get them, and the functions that reach a profile's
        ledger, tell whether a profile exists, read the stored ledger figures. The kill
        switch (`Safety`) acts through the System's own calls (states, stored writes)."""
        cfg = self.config
        self.accounts = Accounts(cfg, self.clock)
        self.trading = Trading(cfg, self.clock, self.accounts, to_ledger=self.submit,
                               bus=self.bus, knows_profile=self.registry.knows,
                               snapshots=self.store.snapshots)
        self.trading.safety = Safety(self, self.trading)
        self.trading.start(oms_store, profiles, control_store)
        self.allocation = AllocationService(
            cfg.allocation, self.accounts, to_ledger=self.submit,
            knows_profile=self.registry.knows, running=lambda: self.started_at is not None,
            storage=self.journal, instruments=instruments)

    # -- the kill switch and breakers ----------------------------------------------

    @property
    def global_state(self) -> GlobalState:
        return self._global

    def set_global_state(self, state: str, reason: str = "",
                         changed_by: str = "api") -> GlobalState:
        """The global kill switch: ``HALTED`` or ``REDUCE_ONLY`` stops new exposure on
        every profile (exits go on), ``ACTIVE`` lets each profile's own state decide.
        Answered once stored; every check that starts after that sees it."""
        if state not in m.TRADING_STATES:
            raise InvalidArgument("state", f"state must be one of {list(m.TRADING_STATES)}")
        with self._global_lock:  # the stored and the live state change together
            return self._set_global_state(state, reason, changed_by)

    def _set_global_state(self, state: str, reason: str, changed_by: str) -> GlobalState:
        gs = GlobalState(state, reason or "", changed_by, self.clock.now())
        if state != "ACTIVE":
            # stricter at once: every check from here on sees it (a failed write leaves
            # it strict in memory, never looser)
            self._global = gs
        done = Reply()
        self.journal.set_global_state(gs, on_commit=lambda: done.resolve(True),
                                      on_fail=done.fail)
        done.get(self.config.ledger.call_timeout_s)
        self._global = gs
        logger.warning("global trading state {} (by {}: {})", state, changed_by,
                       reason or "no reason given")
        if self.trading is not None:
            self.trading.safety.on_global_state(state, reason, changed_by)
            if state != "ACTIVE":  # answered once the working entries are canceled
                self.accounts.settle()
        return gs

    def set_account_state(self, account_id: str, state: str, reason: str = "",
                          changed_by: str = "api"):
        """A broker account's trading state (`account.set_state`): HALTED or REDUCE_ONLY
        stops new exposure on every profile of the account and cancels their working
        entries; ACTIVE lets each profile's own state decide (the global one applies).
        Answered once stored."""
        return self.trading.safety.set_account_state(account_id, state, reason, changed_by)

    def account_get(self, account_id: str) -> dict[str, Any]:
        """A broker account (`account.get`): mode, connection, venue balances per coin,
        the last reconcile, the age of the venue's last answer, its capital and cap."""
        return self.accounts.get(account_id)

    def account_reconcile(self, account_id: str) -> dict[str, Any]:
        """Reconcile a live account with its venue now (`account.reconcile`): its
        report, both sides of every difference. A difference nothing explains puts the
        account in REDUCE_ONLY and raises an alert."""
        return self.accounts.reconcile(account_id)

    def flatten(self, scope: str = "all", target: str | None = None, *,
                client_request_id: str, reason: str = "", requested_by: str = "api"
                ) -> dict[str, Any]:
        """Halt a profile, a broker account or everything (`scope` ``profile``,
        ``account``, ``all``), cancel its working entries and close every open position,
        once per `client_request_id` (a repeat answers what the first did). Answered
        when every close is asked for; the exits fill on the next ticks."""
        return self.trading.safety.flatten(scope, target, client_request_id, reason,
                                           requested_by)

    def reset_breakers(self, profile_id: str, kinds=(), reason: str = "",
                       changed_by: str = "api") -> list:
        """Reset a profile's tripped breakers by hand (all when `kinds` is empty);
        answers the trips that were reset."""
        return self._call(profile_id, m.ResetBreakers(kinds=tuple(kinds), reason=reason,
                                                      changed_by=changed_by)).result

    def risk_check(self, profile_id: str, raw: dict[str, Any], callback=None) -> Reply:
        """What-if (`risk.check`): every check for a signal like `raw`, no side effects."""
        return self.trading.risk_check(profile_id, raw, callback)

    # -- trading (actors/trading.py) --------------------------------------------------

    def signal(self, profile_id: str, symbol: str, side: str, price: Any, *,
               timestamp: str | None = None, **optional: Any) -> dict[str, Any]:
        """Submit a trading signal (the `signal.submit` op) and wait for the answer."""
        raw = {"symbol": symbol, "side": side, "price": price,
               "timestamp": timestamp or self.clock.now().isoformat(), **optional}
        return self.trading.submit_signal(profile_id, raw).get(
            self.config.ledger.call_timeout_s).to_map()

    def submit_order(self, profile_id: str, client_order_id: str, symbol: str, side: str,
                     qty: Any, *, type: str = "MARKET", price: Any = None,
                     tp_price: Any = None, sl_price: Any = None,
                     reservation_id: str | None = None, trigger_price: Any = None,
                     time_in_force: str | None = None, expire_at: Any = None,
                     trail_amount: Any = None, trail_pct: Any = None,
                     trail_activation: Any = None, position_id: str | None = None) -> Outcome:
        """Place an order (the `order.submit` op); waits until it is recorded and sent.
        `type` MARKET, LIMIT, STOP (`trigger_price`) or STOP_LIMIT (`price` and
        `trigger_price`); `time_in_force` GTC (default), IOC, FOK or GTD (`expire_at`);
        a trailing stop for its position: `trail_amount` or `trail_pct`, from an optional
        `trail_activation` price. With `position_id` it adds to that open position
        (scale-in)."""
        return self.trading.submit_order(
            profile_id, client_order_id=client_order_id, symbol=symbol, side=side,
            type=type, qty=qty, price=price, tp_price=tp_price, sl_price=sl_price,
            reservation_id=reservation_id, trigger_price=trigger_price,
            time_in_force=time_in_force, expire_at=expire_at, trail_amount=trail_amount,
            trail_pct=trail_pct, trail_activation=trail_activation, position_id=position_id,
        ).get(self.config.ledger.call_timeout_s)

    def cancel_order(self, profile_id: str, order_id: str):
        return self.trading.cancel_order(profile_id, order_id)

    def amend_order(self, profile_id: str, order_id: str, *, qty: Any = None,
                    price: Any = None, trigger_price: Any = None):
        """Amend a working LIMIT / STOP / STOP_LIMIT order (the `order.amend` op): its
        `qty`, `price` and / or `trigger_price`; its capital is re-reserved for the new
        terms. Answers the order as amended."""
        return self.trading.amend_order(profile_id, order_id, qty=qty, price=price,
                                        trigger_price=trigger_price)

    def close_position(self, profile_id: str, position_id: str, reason: str = "manual"):
        return self.trading.close_position(profile_id, position_id, reason)

    def set_stops(self, profile_id: str, position_id: str, *, tp_price: Any = None,
                  sl_price: Any = None, trail_amount: Any = None, trail_pct: Any = None,
                  trail_activation: Any = None, clear: Any = ()):
        """Move an open position's take-profit / stop-loss and set or clear its trailing
        stop (the `position.set_stops` op): what is not given stays; `clear` lists what
        to remove (``tp``, ``sl``, ``trail``). The position as it is now."""
        return self.trading.set_stops(profile_id, position_id, tp_price=tp_price,
                                      sl_price=sl_price, trail_amount=trail_amount,
                                      trail_pct=trail_pct,
                                      trail_activation=trail_activation, clear=clear)

    def reduce_position(self, profile_id: str, position_id: str, *, qty: Any = None,
                        fraction: Any = None):
        """Exit part of an open position at market (the `position.reduce` op): `qty`, or
        `fraction` of it (1: a close). Answers (position, quantity asked, is a close)."""
        return self.trading.reduce_position(profile_id, position_id, qty=qty,
                                            fraction=fraction)

    def advance(self, n: int = 1) -> int:
        """Step mode: run `n` simulator ticks and wait for all they caused to commit."""
        return self.trading.advance(n)

    def price(self, symbol: str):
        return self.trading.price(symbol)
