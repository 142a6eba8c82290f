"""`Safety`: the kill switch that acts, beside `Trading`.

- **States that act.** Whenever a profile may no longer add exposure -- its own state,
  its broker account's or the global one becomes ``HALTED`` or ``REDUCE_ONLY`` (set by
  hand or automatically), or one of its drawdown breakers trips -- its working entry
  orders are canceled at the broker, each once, with the reason. Exits stay: a
  position's take-profit and stop-loss, a requested close. A fill the broker reports
  for an entry after that (a race at the broker) is booked, never refused, and raises an
  alert naming the new position, so it can be closed. After a restart the same holds
  for the orders restored to the brokers.
- **Flatten** (`flatten`): a profile, an account or everything goes ``HALTED`` first
  (stored), then its working entries are canceled, the account managers settle (every
  fill reported before the cancels is booked), and every open position is closed once.
  Idempotent by a client key: a repeat answers what the first did.
- **Risk marked to market.** Price ticks reach the profiles that hold the symbol (at
  most once per ``[risk] mark_interval_s`` each): their breakers run at the tick's
  prices, and a trip carries the tick's time; their figures go to the account's loss
  limits.
- **Account states.** Each broker account has a trading state of its own (stored), set
  by hand (`account.set_state`) or by its loss limits (`actors.account_risk`).
- **Alerts** (`actors.alerts`) for each of these, and the reasons `system.health`
  reports ``degraded`` for while a profile or an account is halted automatically or a
  breaker is tripped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from loguru import logger

from capflow.actors.account_messages import CancelEntries, RebaseLossLimits
from capflow.actors.alerts import AUTOMATIC, CRITICAL, WARNING, Alert, raise_alert
from capflow.actors.model import messages as m
from capflow.actors.model.errors import Conflict, InvalidArgument, NotFound, Unavailable
from capflow.actors.model.risk import AccountState, is_blocking
from capflow.actors.reply import Reply

FLATTEN_SCOPES = ("profile", "account", "all")


class Safety:
    def __init__(self, system, trading):
        self.system = system
        self.trading = trading
        self.accounts = trading.accounts
        self.config = system.config
        self.clock = system.clock
        self.store = None  # storage.control_store.ControlStore; None with storage off
        #: each broker account's trading state (ACTIVE unless stored otherwise)
        self.account_states: dict[str, AccountState] = {}
        self._saved: dict[str, dict] = {}
        #: why the server is degraded: ("profile" | "account", id) or ("breaker", profile,
        #: code) -> text (automatic halts, tripped breakers)
        self.degraded: dict[tuple, str] = {}
        #: who holds what: symbol -> profile -> open positions (risk marked to market)
        self._holders: dict[str, Counter[str]] = defaultdict(Counter)
        self._observing: set[str] = set()
        self._observed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._account_lock = threading.Lock()
        self._flatten_lock = threading.Lock()
        self._flattens: dict[tuple, dict] = {}  # storage off: (caller, key) -> its flatten

    # -- start ----------------------------------------------------------------------------

    def load(self, store, profiles) -> None:
        """Before the account managers start: the stored account states and what is
        halted automatically or has a tripped breaker."""
        self.store = store
        rows = store.account_states() if store is not None else {}
        for aid, row in rows.items():
            self.account_states[aid] = AccountState(row["state"], row["reason"],
                                                    row["changed_by"], row["changed_at"])
            if row["risk_state"]:
                self._saved[aid] = row["risk_state"]
            self._mark_degraded(("account", aid), row["state"], row["changed_by"],
                                f"account {aid} is {row['state']}: {row['reason']}")
        for p in profiles:
            self._mark_degraded(("profile", p.profile_id), p.state, p.state_by,
                                f"profile {p.profile_id} is {p.state}: {p.state_reason}")
        for pid, codes in (store.tripped_breakers() if store is not None else {}).items():
            for code in codes:
                self.degraded[("breaker", pid, code)] = f"profile {pid}: {code} tripped"

    def saved_risk(self, account_id: str) -> dict | None:
        """What the account's loss limits stored (their daily references)."""
        return self._saved.get(account_id)

    def restored(self, account_id: str, orders, positions, profiles) -> None:
        """After an account's working orders and open positions were restored to its
        broker: track the positions, and cancel the entries of the profiles that may not
        add exposure (a halt, or a trip, that a crash cut off before its cancels)."""
        with self._lock:
            for pid, p in positions:
                self._holders[p.symbol][pid] += 1
        if not orders:
            return
        states = {p.profile_id: p.state for p in profiles}
        tripped = {k[1] for k in self.degraded if k[0] == "breaker"}
        account = self.account_state(account_id)
        blocked = {}
        for pid, _o in orders:
            why = _blocking(states.get(pid, "ACTIVE"), account, self.system.global_state)
            if why is None and pid in tripped:
                why = "a tripped breaker"
            if why is not None:
                blocked[pid] = why
        for pid, why in blocked.items():
            self._cancel(account_id, frozenset({pid}), f"restart: {why}")

    # -- account states ------------------------------------------------------------------

    def account_state(self, account_id: str | None) -> AccountState | None:
        return self.account_states.get(account_id) if account_id is not None else None

    def set_account_state(self, account_id: str, state: str, reason: str = "",
                          changed_by: str = "api") -> AccountState:
        """An account's trading state, by hand; answered once stored. HALTED and
        REDUCE_ONLY cancel the working entries of every profile of the account."""
        if account_id not in self.accounts.managers:
            raise NotFound("account", account_id)
        if state not in m.TRADING_STATES:
            raise InvalidArgument("state", f"state must be one of {list(m.TRADING_STATES)}")
        with self._account_lock:
            before = self.account_states.get(account_id)
            st = AccountState(state, reason or "", changed_by, self.clock.now())
            if state == "ACTIVE" and before is not None and before.changed_by == "account-risk":
                # resumed after its loss limits halted it: the losses count from now
                self._saved[account_id] = self.accounts.ask(account_id, RebaseLossLimits())
            if is_blocking(state):  # stricter at once: checks that start now see it
                self.account_states[account_id] = st
                self._store_account(account_id, wait=True)
            else:  # looser only once stored (a failed write leaves it strict)
                self._store_account(account_id, wait=True, state=st)
                self.account_states[account_id] = st
        logger.warning("account {} trading state {} (by {}: {})", account_id, state,
                       changed_by, reason or "no reason given")
        self._mark_degraded(("account", account_id), state, changed_by,
                            f"account {account_id} is {state}: {reason}")
        if is_blocking(state):  # answered once the working entries are canceled
            self._cancel(account_id, None, f"account {state}: {reason or changed_by}")
            self.accounts.settle([account_id])
        return st

    def breach(self, account_id: str, reason: str) -> bool:
        """On the account manager's thread: its loss limits were crossed. Halts the
        account (in memory at once, stored without waiting) unless it is halted already;
        True when it did (the manager then cancels the working entries)."""
        if not self._automatic(account_id, "HALTED", reason, "account-risk"):
            return False
        raise_alert(self._publish, Alert(
            kind="account_halted", severity=CRITICAL, scope="account", target=account_id,
            reason=reason, ts=self.clock.now(), details={"state": "HALTED"}))
        return True

    def unbooked(self, account_id: str, reason: str) -> bool:
        """Any thread: a fill the account's broker reported could not be booked, so
        capflow's ledger no longer matches the venue. The account goes REDUCE_ONLY (in
        memory at once, stored without waiting) unless it is blocked already; True when
        it did (the manager then cancels the working entries). The alert is the
        manager's."""
        return self._automatic(account_id, "REDUCE_ONLY", reason, "reconcile")

    def _automatic(self, account_id: str, state: str, reason: str, by: str) -> bool:
        with self._account_lock:
            current = self.account_states.get(account_id)
            if current is not None and (current.state == "HALTED" or
                                        current.state == state):
                return False
            self.account_states[account_id] = AccountState(state, reason, by,
                                                           self.clock.now())
            self._store_account(account_id, wait=False)
        self._mark_degraded(("account", account_id), state, by,
                            f"account {account_id} is {state}: {reason}")
        return True

    def save_risk(self, account_id: str, saved: dict) -> None:
        """On the account manager's thread: store its loss limits' daily references."""
        self._saved[account_id] = saved
        with self._account_lock:
            self._store_account(account_id, wait=False)

    def _store_account(self, account_id: str, *, wait: bool,
                       state: AccountState | None = None) -> None:
        st = state or self.account_states.get(account_id) or AccountState(
            changed_at=self.clock.now())
        stored = AccountState(st.state, st.reason, st.changed_by or "",
                              st.changed_at or self.clock.now())
        done = Reply()

        def failed(exc: Exception) -> None:
            logger.error("storing the state of account {} failed: {}", account_id, exc)
            done.fail(exc)

        self.system.journal.set_account_state(account_id, stored, self._saved.get(account_id),
                                              on_commit=lambda: done.resolve(1),
                                              on_fail=failed)
        if wait:
            done.get(self.config.ledger.call_timeout_s)

    def on_global_state(self, state: str, reason: str, changed_by: str) -> None:
        if is_blocking(state):
            for aid in list(self.accounts.managers):
                self._cancel(aid, None, f"global {state}: {reason or changed_by}")

    # -- what happens on the bus ----------------------------------------------------------

    def on_events(self, events) -> None:
        """A bus listener (it runs on the thread that committed, so it only tells)."""
        ticks = []
        opened = []
        for e in events:
            kind = type(e)
            if kind is m.TradingStateChanged:
                self._state_changed(e)
            elif kind is m.BreakerTripped:
                self._tripped(e)
            elif kind is m.BreakerReset:
                with self._lock:
                    self.degraded.pop(("breaker", e.profile_id, e.trip.code), None)
            elif kind is m.OrderFilled:
                if e.position_opened:
                    with self._lock:
                        self._holders[e.position.symbol][e.profile_id] += 1
                    opened.append(e)
                if e.while_blocked is not None:
                    self._filled_while_blocked(e)
            elif kind is m.PositionClosed:
                self._forget_position(e.profile_id, e.position.symbol)
            elif kind is m.LedgerMismatchDetected:
                raise_alert(self._publish, Alert(
                    kind="ledger_mismatch", severity=CRITICAL, scope="profile",
                    target=e.profile_id, reason="the stored snapshot differs from the rows",
                    ts=e.ts, details={"snapshot": _plain(e.snapshot),
                                      "rebuilt": _plain(e.rebuilt)}))
            elif kind.__name__ == "Tick":
                ticks.append(e)
        if ticks:
            self._mark_to_market(ticks)
        if opened:
            # the market may have ticked on while the fill was booked: mark the new
            # position to the latest price now rather than at the next tick
            board = self.trading.board
            self._mark_to_market([t for t in (board.get(e.position.symbol) for e in opened)
                                  if t is not None], only={e.profile_id for e in opened})

    def _state_changed(self, e: m.TradingStateChanged) -> None:
        pid = e.profile_id
        self._mark_degraded(("profile", pid), e.state, e.changed_by,
                            f"profile {pid} is {e.state}: {e.reason}")
        if e.changed_by in AUTOMATIC and e.state != "ACTIVE":
            raise_alert(self._publish, Alert(
                kind="state_changed", severity=CRITICAL, scope="profile", target=pid,
                reason=e.reason, ts=e.ts,
                details={"state": e.state, "changed_by": e.changed_by}))
        if is_blocking(e.state):
            self._cancel(self.accounts.account_for(pid), frozenset({pid}),
                         f"profile {e.state}: {e.reason or e.changed_by}")

    def _tripped(self, e: m.BreakerTripped) -> None:
        pid, trip = e.profile_id, e.trip
        with self._lock:
            self.degraded[("breaker", pid, trip.code)] = (
                f"profile {pid}: {trip.code} tripped (loss {trip.loss_pct}% >= "
                f"{trip.limit_pct}%)")
        raise_alert(self._publish, Alert(
            kind="breaker_tripped", severity=WARNING, scope="profile", target=pid,
            reason=f"{trip.code}: loss {trip.loss_pct}% reached the limit {trip.limit_pct}%",
            ts=e.ts, details={"breaker": trip.kind, "code": trip.code,
                              "tick_ts": e.tick_ts, "until": trip.until,
                              "equity": trip.equity}))
        self._cancel(self.accounts.account_for(pid), frozenset({pid}), trip.code)

    def _filled_while_blocked(self, e: m.OrderFilled) -> None:
        raise_alert(self._publish, Alert(
            kind="entry_filled_while_blocked", severity=CRITICAL, scope="profile",
            target=e.profile_id,
            reason=f"an entry of {e.order.order_id} filled while entries are blocked "
                   f"({e.while_blocked}): position {e.position.position_id} is open, close "
                   "it (position.close or flatten)",
            ts=e.ts, details={"order_id": e.order.order_id,
                              "position_id": e.position.position_id,
                              "qty": e.fill.qty, "price": e.fill.price}))

    def _forget_position(self, pid: str, symbol: str) -> None:
        with self._lock:
            holders = self._holders.get(symbol)
            if holders is None:
                return
            holders[pid] -= 1
            if holders[pid] <= 0:
                del holders[pid]
                self._observed_at.pop(pid, None)
            if not holders:
                del self._holders[symbol]

    def _mark_degraded(self, key: tuple, state: str, changed_by: str, text: str) -> None:
        with self._lock:
            if state != "ACTIVE" and changed_by in AUTOMATIC:
                self.degraded[key] = text
            else:
                self.degraded.pop(key, None)

    def reasons(self) -> list[str]:
        with self._lock:
            return sorted(self.degraded.values())

    def _publish(self, events) -> None:
        self.system.bus.publish(events)

    def _cancel(self, account_id: str | None, profiles: frozenset | None,
                reason: str) -> None:
        ref = self.accounts.managers.get(account_id) if account_id is not None else None
        if ref is None:
            return
        try:
            ref.tell((CancelEntries(profiles, reason), Reply()))
        except Exception as exc:  # shutting down
            logger.warning("account {} gone; entries not canceled: {}", account_id, exc)

    # -- risk marked to market ------------------------------------------------------------

    @property
    def observing(self) -> int:
        """Observations sent to ledgers and not answered yet."""
        return len(self._observing)

    def _mark_to_market(self, ticks, only: set[str] | None = None) -> None:
        interval = 0.0 if only is not None else self.config.risk.mark_interval_s
        now = time.monotonic()
        due: dict[str, dict[str, Decimal]] = {}
        tick_ts = None
        with self._lock:
            for t in ticks:
                holders = self._holders.get(t.symbol)
                if not holders:
                    continue
                tick_ts = t.ts if tick_ts is None or t.ts > tick_ts else tick_ts
                for pid in holders:
                    if only is not None and pid not in only:
                        continue
                    if pid in self._observing or now - self._observed_at.get(pid, -1e9) < (
                            interval):
                        continue
                    due.setdefault(pid, {})[t.symbol] = t.last
            for pid in due:
                self._observing.add(pid)
                self._observed_at[pid] = now
        for pid, marks in due.items():
            self.system.submit(pid, m.ObserveMarket(marks=marks, tick_ts=tick_ts,
                                                    cause="tick"),
                               self._observed(pid))

    def _observed(self, pid: str):
        def done(r: Reply) -> None:
            _, error = r.result()
            if error is not None:
                logger.bind(profile=pid).warning("marking to market failed: {}", error)
            with self._lock:
                self._observing.discard(pid)

        return done

    # -- flatten --------------------------------------------------------------------------

    def flatten(self, scope: str, target: str | None, key: str, reason: str = "",
                requested_by: str = "api") -> dict[str, Any]:
        """Halt, cancel the working entries, close every open position of a profile
        (`target`), a broker account (`target`) or everything (``all``), once per key."""
        trading = self.trading
        if scope not in FLATTEN_SCOPES:
            raise InvalidArgument("scope", f"scope must be one of {list(FLATTEN_SCOPES)}")
        if scope == "all":
            target = None
        elif not target:
            raise InvalidArgument("target", f"a {scope} flatten names the {scope}")
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise InvalidArgument("client_request_id", "client_request_id must be 1..128 "
                                                       "characters")
        if trading.oms_store is None:
            raise Unavailable("storage is off: flatten needs the stored orders and positions")
        with self._flatten_lock:
            # each caller's keys are its own: another caller's flatten is never named
            prior = (self.store.flatten(requested_by, key) if self.store is not None
                     else self._flattens.get((requested_by, key)))
            if prior is not None:
                if (prior["scope"], prior["target"]) != (scope, target):
                    raise Conflict(f"client_request_id {key!r} was used for another flatten",
                                   {"client_request_id": key, "scope": prior["scope"],
                                    "target": prior["target"]})
                return {**prior["result"], "reused": True}
            if scope == "profile":
                trading._known(target)
                accounts, profiles = [self.accounts.account_for(target)], frozenset({target})
            elif scope == "account":
                if target not in self.accounts.managers:
                    raise NotFound("account", target)
                accounts, profiles = [target], None
            else:
                accounts, profiles = list(self.accounts.managers), None
            return self._flatten(scope, target, key, reason, requested_by, accounts,
                                 profiles)

    def _flatten(self, scope, target, key, reason, by, accounts, profiles) -> dict:
        trading, system = self.trading, self.system
        started = self.clock.now()
        why = f"flatten {key}" + (f": {reason}" if reason else "")

        def mine(pid: str) -> bool:
            return profiles is None or pid in profiles

        working = [(pid, o.order_id) for aid in accounts
                   for pid, o in trading.oms_store.open_book(aid)[0] if mine(pid)]
        # 1. no new exposure from here on, stored first
        if scope == "profile":
            system.set_state(target, "HALTED", why, by)
        elif scope == "account":
            self.set_account_state(target, "HALTED", why, by)
        else:
            system.set_global_state("HALTED", why, by)
        # 2. the working entries are canceled, 3. whatever filled before is booked
        for aid in accounts:
            self.accounts.ask(aid, CancelEntries(profiles, why))
        self.accounts.settle(accounts)
        # 4. every open position is closed, once
        closed, gone = [], []
        for aid in accounts:
            for pid, p in trading.oms_store.open_book(aid)[1]:
                if not mine(pid):
                    continue
                try:
                    trading.close_position(pid, p.position_id, "flatten")
                    closed.append({"profile_id": pid, "position_id": p.position_id})
                except Conflict:  # its take-profit or stop-loss came first
                    gone.append(p.position_id)
        canceled = []
        for pid, oid in working:
            o = trading.oms_store.get_order(pid, oid)
            if o is not None and o.status == "CANCELED":
                canceled.append({"profile_id": pid, "order_id": oid})
        result = {"client_request_id": key, "scope": scope, "target": target,
                  "reason": reason, "state": "HALTED", "requested_by": by,
                  "started_at": started.isoformat(), "orders_canceled": canceled,
                  "positions_closed": closed}
        self._record_flatten(key, scope, target, reason, by, started, result)
        raise_alert(self._publish, Alert(
            kind="flatten", severity=WARNING, scope="global" if scope == "all" else scope,
            target=target, reason=why, ts=self.clock.now(),
            details={"orders_canceled": len(canceled), "positions_closed": len(closed),
                     "requested_by": by}))
        return {**result, "reused": False}

    def _record_flatten(self, key, scope, target, reason, by, started, result) -> None:
        if self.store is None:
            self._flattens[(by, key)] = {"scope": scope, "target": target, "result": result}
            return
        done = Reply()
        self.system.journal.record_flatten(key, scope, target, reason, by, started, result,
                                           on_commit=lambda: done.resolve(1),
                                           on_fail=done.fail)
        done.get(self.config.ledger.call_timeout_s)


def _blocking(profile_state: str, account: Any, global_state: Any) -> str | None:
    for what, state in (("profile", profile_state),
                        ("account", getattr(account, "state", "ACTIVE")),
                        ("global", getattr(global_state, "state", "ACTIVE"))):
        if is_blocking(state):
            return f"{what} {state}"
    return None


def _plain(buckets) -> dict:
    return {f: getattr(buckets, f) for f in buckets.__struct_fields__}
