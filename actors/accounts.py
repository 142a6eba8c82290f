"""`Accounts`: the broker accounts of a running capflow, and what their profiles share.

- **Which account.** A profile trades on its account (its ``account_id``, else
  ``[brokers] default_account``). Its allocation is a share of that account's cash when
  their currencies agree (`capital_account_of`); in another currency it is not.
- **The managers.** One `AccountManagerActor` per account hosts its adapter; `status`
  is what each one shows other threads. `ask` waits for the answer, `send` has it
  handed to a callback (on the manager's thread), `tell` expects none.
- **Capital claims.** Before capital is allocated to a profile of an account (a
  creation, a deposit), its amount is claimed from the account's unallocated cash; the
  claim is settled with what was booked, whatever happened (`claim` / `settle_claim`,
  `transfer`). A withdrawal gives back what it took out.
- **Slots.** On an account with account-wide open position limits (`slot_limited`),
  an entry claims a slot first, and settles the claim once its order is recorded or
  refused (`claim_slot` / `settle_slot`).

It knows no System, no `Trading` and no ledger: a call that books on a profile's ledger
is given the function that submits to one (`Submit`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pykka
from loguru import logger

from capflow.actors.account import AccountManagerActor
from capflow.actors.account_messages import (
    ClaimCapital,
    ClaimSlot,
    GetAccount,
    Info,
    Reconcile,
    ReportEquity,
    ReturnCapital,
    SettleClaim,
    SettleSlot,
    SlotQuery,
    Sync,
)
from capflow.actors.account_status import AccountStatus
from capflow.actors.adapters import load_adapter
from capflow.actors.alerts import raise_alert
from capflow.actors.model import messages as m
from capflow.actors.model.account_risk import AccountRisk
from capflow.actors.model.errors import (
    Conflict,
    Denial,
    Denied,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from capflow.actors.model.ids import new_id
from capflow.actors.model.limits import load_timezone
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.prices import STALE_PRICES
from capflow.actors.model.settings import ConfigError
from capflow.actors.model.venue import VenueRules
from capflow.actors.reply import Reply, relay
from capflow.brokers.events import (
    Connected,
    ConnectionFailed,
    Disconnected,
    PricesStale,
    VenueTicks,
)

#: submit a command to a profile's ledger: ``(profile_id, command, callback=None)``; the
#: reply resolves to the `Outcome` once the change is committed
Submit = Callable[..., Reply]
#: publish events on the bus
Publish = Callable[[Sequence[Any]], None]
#: a claim on an account's unallocated cash: (account id, claim id)
CapitalClaim = tuple[str, int]


class Accounts:
    def __init__(self, config, clock):
        self.config = config
        self.clock = clock
        self.managers: dict[str, pykka.ActorRef] = {}  # account id -> its manager
        self.status: dict[str, AccountStatus] = {}
        self.account_of: dict[str, str | None] = {}
        #: profile -> the account whose cash its allocation is part of (None: the
        #: profile's currency is not the account's, so no share of it)
        self.capital_of: dict[str, str | None] = {}
        #: accounts with account-wide open position limits (entries claim a slot first)
        self.slot_limited: set[str] = set()
        self._adapters: dict[str, type] = {}
        #: accounts whose adapter publishes its venue's prices (`venue_prices`)
        self.venue_priced: set[str] = set()
        #: "live" when an account's adapter trades on a real venue, else "paper"
        self.mode = "paper"

    # -- which account ----------------------------------------------------------------

    def load(self, profiles: Iterable[m.Profile]) -> None:
        """Check the accounts' configuration, load their adapter classes and learn which
        account each profile is on; nothing starts yet."""
        brokers = self.config.brokers
        if brokers.default_account not in brokers.accounts:
            raise ConfigError(f"[brokers] default_account {brokers.default_account!r} is not "
                              "one of [brokers.accounts]")
        unknown = sorted(set(self.config.risk.accounts) - set(brokers.accounts))
        if unknown:
            raise ConfigError(f"[risk.accounts] names accounts that are not configured: "
                              f"{unknown}")
        self._adapters = {aid: load_adapter(a.adapter).variant(a)
                          for aid, a in brokers.accounts.items()}
        for aid, cls in self._adapters.items():  # what needs no venue to find is found now
            cls.check_config(aid, brokers.accounts[aid])
        live = sorted(aid for aid, cls in self._adapters.items() if cls.live)
        self.venue_priced = {aid for aid, cls in self._adapters.items() if cls.venue_prices}
        self.mode = "live" if live else "paper"
        expected = self.config.broker_mode
        if expected is not None and expected != self.mode:
            raise ConfigError(
                f"broker_mode (BROKER_MODE) is {expected!r} but the broker accounts are "
                + ("all paper: configure a live adapter in [brokers.accounts.<id>] adapter "
                   "(BROKER_MODE never turns live trading on by itself)" if expected == "live"
                   else f"live ({', '.join(live)}): remove them or say BROKER_MODE=live"))
        for p in profiles:
            self.profile_created(p.profile_id, p.account_id, p.currency)

    def account_for(self, profile_id: str) -> str:
        return self.account_of.get(profile_id) or self.config.brokers.default_account

    def capital_account_of(self, profile_id: str) -> str | None:
        """The account whose cash the profile's allocation is a share of, or None."""
        return self.capital_of.get(profile_id)

    def check_account(self, account_id: str | None) -> None:
        if account_id is not None and account_id not in self.config.brokers.accounts:
            raise InvalidArgument("account_id", f"no broker account {account_id!r} is "
                                                "configured")

    def profile_created(self, profile_id: str, account_id: str | None,
                        currency: str) -> None:
        self.account_of[profile_id] = account_id
        self.capital_of[profile_id] = self._capital_account(account_id, currency)

    def _capital_account(self, account_id: str | None, currency: str) -> str | None:
        aid = account_id or self.config.brokers.default_account
        acfg = self.config.brokers.accounts.get(aid)
        return aid if acfg is not None and acfg.currency == currency else None

    def places(self, account_id: str) -> int:
        """The money places of the account's currency."""
        return self.config.places(self.config.brokers.accounts[account_id].currency)

    # -- the managers -----------------------------------------------------------------

    def start(self, snapshots: Mapping[str, Any], *, book: Submit, publish: Publish,
              saved_risk: Callable[[str], dict | None],
              on_breach: Callable[[str, str], bool],
              on_risk_saved: Callable[[str, dict], None],
              on_unbooked: Callable[[str, str], bool] | None = None,
              on_prices: Callable[[Any], None] | None = None,
              rows=None) -> None:
        """Start a manager for every configured account (after `load`). `snapshots` are
        the profiles' stored ledger figures (what is allocated on each account, and the
        realized PnL its loss limits start from); the managers book on the ledgers with
        `book` and publish connection events and alerts with `publish`; the venues' prices
        (`VenueTicks`, `PricesStale`) go to `on_prices`, on the manager's thread; the account-wide
        loss limits start from `saved_risk(account)` and report through `on_breach` and
        `on_risk_saved`; a broker fill that cannot be booked, or a reconciliation that
        finds a difference, goes to `on_unbooked`; a live adapter reconciles with the
        stored `rows` (`brokers.reconcile.BookedRows`)."""
        cfg = self.config
        allocated: dict[str, Decimal] = {}
        for pid, aid in self.capital_of.items():
            if aid is not None and pid in snapshots:
                allocated[aid] = allocated.get(aid, Decimal(0)) + snapshots[pid].allocated
        pnl: dict[str, dict[str, Decimal]] = {}
        for pid, b in snapshots.items():
            pnl.setdefault(self.account_for(pid), {})[pid] = b.realized_pnl - b.fees
        tz = load_timezone(cfg.risk.timezone)

        def broker_event(e) -> None:
            if isinstance(e, Connected | ConnectionFailed | Disconnected):
                publish([e])
                if on_prices is not None:  # a drop degrades the health, like stale prices
                    on_prices(e)
            elif isinstance(e, VenueTicks | PricesStale) and on_prices is not None:
                on_prices(e)

        for aid, acfg in cfg.brokers.accounts.items():
            status = AccountStatus()
            status.capital = acfg.initial_cash
            status.capital_cap = acfg.max_live_capital
            status.allocated = allocated.get(aid, Decimal(0))
            factory = functools.partial(self._adapters[aid], aid, acfg, clock=self.clock,
                                        money_places=cfg.places(acfg.currency), ids=new_id)
            limits = cfg.risk.accounts.get(aid)
            if limits is not None and limits.has_slots:
                self.slot_limited.add(aid)
            risk = AccountRisk(aid, limits, tz, pnl=pnl.get(aid), saved=saved_risk(aid))
            self.managers[aid] = AccountManagerActor.start(
                aid, factory, book, status, on_event=broker_event, limits=limits, risk=risk,
                on_breach=functools.partial(on_breach, aid),
                on_risk_saved=functools.partial(on_risk_saved, aid),
                alert=functools.partial(raise_alert, publish),
                on_unbooked=None if on_unbooked is None else functools.partial(
                    on_unbooked, aid), rows=rows)
            self.status[aid] = status

    def stop(self) -> None:
        for ref in self.managers.values():
            ref.stop(timeout=10)
        self.managers.clear()

    def ask(self, account_id: str, msg: Any, timeout: float | None = None) -> Any:
        """Blocking: the manager's answer to `msg`."""
        r = Reply()
        self.managers[account_id].tell((msg, r))
        return r.get(timeout or self.config.ledger.call_timeout_s)

    def send(self, account_id: str, msg: Any, callback: Callable[[Reply], None]) -> None:
        """Non-blocking: `callback` gets the answer, on the manager's thread (or at once,
        failed `UNAVAILABLE`, when the manager is not running)."""
        reply = Reply(callback)
        try:
            self.managers[account_id].tell((msg, reply))
        except Exception as exc:  # stopped, or stopping
            reply.fail(Unavailable(f"broker account {account_id!r} is not running: {exc}"))

    def tell(self, account_id: str, msg: Any) -> None:
        """Tell a manager something that needs no answer; one that has stopped (shutting
        down) has nothing left to count."""
        ref = self.managers.get(account_id)
        if ref is None:
            return
        try:
            ref.tell((msg, Reply()))
        except Exception as exc:
            logger.warning("account manager gone; {} dropped: {}", type(msg).__name__, exc)

    def info(self, account_id: str):
        return self.ask(account_id, Info())

    def get(self, account_id: str) -> dict:
        """`account.get`: the account's connection, venue balances, last reconcile."""
        if account_id not in self.managers:
            raise NotFound("account", account_id)
        return self.ask(account_id, GetAccount())

    def reconcile(self, account_id: str, timeout: float = 60.0) -> dict:
        """`account.reconcile`: reconcile a live account with its venue now; the report."""
        if account_id not in self.managers:
            raise NotFound("account", account_id)
        return self.ask(account_id, Reconcile(), timeout)

    def supports_trailing(self, account_id: str) -> bool:
        """Whether the account's adapter watches trailing stops."""
        return bool(getattr(self._adapters.get(account_id), "supports_trailing", False))

    def venue_rules(self, account_id: str) -> VenueRules | None:
        """The instrument rules the account's venue published (None: it has none)."""
        status = self.status.get(account_id)
        return None if status is None else status.venue_rules

    def stale_prices(self, account_id: str) -> Denial | None:
        """The refusal of an entry while the account's venue prices are stale
        (``STALE_PRICES``), else None."""
        status = self.status.get(account_id)
        watch = None if status is None else status.prices
        if watch is None or not watch.stale():
            return None
        age = watch.age_s()
        return Denial("RISK_REJECTED", f"the prices of broker account {account_id!r} are "
                      f"stale (none for {age:.1f} s, stale after {watch.stale_after_s} s): "
                      "no new entries until they arrive again; exits are taken",
                      {"reason": STALE_PRICES, "limit": watch.stale_after_s,
                       "value": round(age, 3), "account_id": account_id})

    def venue_symbols(self) -> set[str]:
        """The symbols of the ``symbols`` tables of the accounts priced by their venue:
        the simulator does not simulate them."""
        return {s for aid in self.venue_priced
                for s in self.config.brokers.accounts[aid].symbols}

    def require_connected(self, account_id: str) -> None:
        st = self.status[account_id]
        if st.state != "CONNECTED":
            raise Unavailable(f"broker account {account_id!r} is {st.state.lower()}: orders "
                              "are refused", {"account_id": account_id, "state": st.state})

    def settle(self, accounts: list[str] | None = None, timeout: float = 30.0, *,
               also: Callable[[], bool] | None = None) -> None:
        """Wait until these accounts' managers (all: None) have handled their mailboxes
        and every booking they sent is committed (and `also()` holds)."""
        accounts = list(self.managers) if accounts is None else accounts
        deadline = time.monotonic() + timeout

        def quiet() -> bool:
            return (all(self.status[aid].pending == 0 for aid in accounts)
                    and (also is None or also()))

        while True:
            for aid in accounts:
                self.ask(aid, Sync(), timeout)
            if quiet():
                # one more round: a booking's commit may have queued a new order
                for aid in accounts:
                    self.ask(aid, Sync(), timeout)
                if quiet():
                    return
            if time.monotonic() > deadline:
                raise Unavailable("trading did not settle in time")
            time.sleep(0.0005)

    # -- the accounts' capital, divided among their profiles ------------------------

    def claim(self, account_id: str | None, currency: str,
              amount: Decimal) -> CapitalClaim | None:
        """Blocking: claim `amount` of the account's unallocated cash (raises `Denied`
        INSUFFICIENT_CAPITAL); settle the claim with `settle_claim` whatever happens next.
        None: a profile in this currency has no share of the account's cash."""
        aid = self._capital_account(account_id, currency)
        if aid is None:
            return None
        return aid, self.ask(aid, ClaimCapital("", amount))

    def settle_claim(self, claim: CapitalClaim, booked: Decimal) -> None:
        aid, claim_id = claim
        self.tell(aid, SettleClaim(claim_id, booked))

    def transfer(self, profile_id: str, cmd: m.Deposit | m.Withdraw, submit: Submit,
                 callback: Callable[[Reply], None] | None = None) -> Reply:
        """Non-blocking: a deposit claims its amount from the account's unallocated cash,
        then `submit`s it to the profile's ledger and settles the claim with what was
        booked; a withdrawal is submitted, then gives back what it took out."""
        reply = Reply(callback)
        aid = self.capital_of.get(profile_id)
        if aid is None:  # not on an account's capital (or not a profile: the ledger says)
            submit(profile_id, cmd, relay(reply))
            return reply
        if isinstance(cmd, m.Withdraw):
            def withdrawn(r: Reply) -> None:
                out, error = r.result()
                if error is None and not out.reused:
                    self.tell(aid, ReturnCapital(-out.result.amount))
                reply.finish_with(out, error)

            submit(profile_id, cmd, withdrawn)
            return reply
        try:
            amount = parse_decimal(cmd.amount, "amount", places=self.places(aid))
        except Exception as exc:
            reply.fail(exc)
            return reply

        def claimed(r: Reply) -> None:
            claim_id, error = r.result()
            if isinstance(error, Denied):
                # no cash left for a new deposit; a repeat of one already made is still
                # answered with its first result
                again = msgspec.structs.replace(cmd, repeat_only=True, refusal=error.denial)
                submit(profile_id, again, relay(reply))
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
                self.tell(aid, SettleClaim(claim_id, booked))
                reply.finish_with(out, err)

            submit(profile_id, cmd, deposited)

        self.send(aid, ClaimCapital(profile_id, amount), claimed)
        return reply

    def free_cash(self, account_id: str, stale_after_s: float,
                  answer: Callable[[Decimal | None, str], None]) -> None:
        """Non-blocking: `answer(cash, "")` with the account's free cash, or
        `answer(None, why)` when it is not known: no such account, a manager busy with
        one message for longer than `stale_after_s`, an error. The figure the manager
        last reported is answered at once while nothing that changes it was handled."""
        ref = self.managers.get(account_id)
        if ref is None:
            answer(None, "no such account")
            return
        status = self.status[account_id]
        busy = status.busy_since
        if busy is not None and time.monotonic() - busy > stale_after_s:
            answer(None, "timeout: its manager is stuck")
            return
        cash = status.free_cash
        if not status.cash_dirty and cash is not None:
            answer(cash, "")
            return

        def answered(r: Reply) -> None:
            info, error = r.result()
            if error is not None:
                answer(None, f"error: {getattr(error, 'message', error)}")
            else:
                answer(info.free_cash, "")

        try:
            ref.tell((Info(), Reply(answered)))
        except Exception as exc:  # the manager is gone
            answer(None, f"error: {exc}")

    # -- account-wide limits ----------------------------------------------------------

    def claim_slot(self, account_id: str, profile_id: str, symbol: str,
                   callback: Callable[[Reply], None]) -> None:
        """Claim an open position slot of the account for an entry in `symbol`: the
        reply is the claim id, or fails `Denied` (RISK_REJECTED) when the account is
        full. Every claim is settled (`settle_slot`), whatever happens to the entry."""
        self.send(account_id, ClaimSlot(profile_id, symbol), callback)

    def settle_slot(self, account_id: str, claim_id: int) -> None:
        self.tell(account_id, SettleSlot(claim_id))

    def slot_checks(self, account_id: str, symbol: str,
                    callback: Callable[[Reply], None]) -> None:
        """`risk.check`: the account-wide checks one more entry in `symbol` would meet."""
        self.send(account_id, SlotQuery(symbol), callback)

    def exposure_of_others(self, account_id: str, profile_id: str) -> Decimal:
        """The gross exposure the account's other profiles last reported."""
        status = self.status.get(account_id)
        if status is None or status.risk is None:
            return Decimal(0)
        return status.risk.exposure_of_others(profile_id)

    def report_equity(self, profile_id: str, account_id: str, pnl: Decimal,
                      exposure: Decimal, ts) -> None:
        """A profile's PnL and exposure now, for the account's loss and exposure limits."""
        ref = self.managers.get(account_id)
        if ref is not None:
            ref.tell((ReportEquity(profile_id, pnl, exposure, ts), Reply()))
