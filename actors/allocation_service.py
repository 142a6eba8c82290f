"""`AllocationService`: the calls of `allocation.quote` and `allocation.reserve`.

A quote gathers three things in parallel, each with its own timeout:

- the profile's capital and exposure, from its ledger actor (fail closed: without it
  the quote is `UNAVAILABLE`, never an optimistic zero);
- the free cash of the profile's broker account, from its account manager (unknown
  counts as 0: nothing to invest);
- the liquidity signal, from the provider (unknown: confidence 0, the fallback);

then applies `actors.allocation.decide`. Nothing here blocks: the parts answer through
callbacks, and one sweeper thread ends the parts that are past their time.

A reservation gathers the two outside parts the same way and then sends them with the
reserve command, so that the ledger actor decides and reserves in one step: concurrent
reservations of one profile cannot both spend the same capital.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol

from loguru import logger

from capflow.actors.accounts import Accounts, Submit
from capflow.actors.liquidity import PushLiquidity, load_provider, unwrap
from capflow.actors.model import messages as m
from capflow.actors.model.allocation import Decision, Externals, Instruments, decide
from capflow.actors.model.errors import (
    CapflowError,
    Conflict,
    Denial,
    Denied,
    Internal,
    NotFound,
    Unavailable,
)
from capflow.actors.model.orders import parse_symbol
from capflow.actors.model.settings import AllocationConfig
from capflow.actors.reply import Reply, relay

_LEDGER, _ACCOUNT, _LIQUIDITY = "ledger", "account", "liquidity"


class _Gather:
    """The parts of one request: each is set once, by its answer or by its deadline;
    `finish` runs once, when the last part is in (or at the first error)."""

    __slots__ = ("deadlines", "done", "error", "finish", "lock", "notes", "on_bug",
                 "pending", "values")

    def __init__(self, deadlines: dict[str, float], finish: Callable[[_Gather], None]):
        self.deadlines = deadlines
        self.pending = set(deadlines)
        self.values: dict[str, Any] = {}
        self.notes: dict[str, str] = {}
        self.error: BaseException | None = None
        self.finish = finish
        self.on_bug: Callable[[], None] | None = None
        self.done = False
        self.lock = threading.Lock()

    def set(self, name: str, value: Any, note: str = "") -> None:
        with self.lock:
            if self.done or name not in self.pending:
                return
            self.pending.discard(name)
            self.values[name], self.notes[name] = value, note
            if self.pending:
                return
            self.done = True
        self._finish()

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.done:
                return
            self.done, self.error = True, error
        self._finish()

    def expire(self, now: float) -> bool:
        """End the parts past their deadline; True once the gather is finished."""
        with self.lock:
            if self.done:
                return True
            for name in [n for n in self.pending if self.deadlines[n] <= now]:
                self.pending.discard(name)
                self.values[name], self.notes[name] = None, "timeout"
            if self.pending:
                return False
            self.done = True
        self._finish()
        return True

    def _finish(self) -> None:
        try:
            self.finish(self)
        except Exception:
            logger.exception("allocation: finishing a request failed")
            if self.on_bug is not None:  # answer the request, whatever went wrong
                self.on_bug()


class _Sweeper:
    """One thread that times out the parts of every gather in flight."""

    def __init__(self, resolution_s: float = 0.02):
        self.resolution_s = resolution_s
        self._live: set[_Gather] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capflow-allocation",
                                        daemon=True)
        self._thread.start()

    def watch(self, g: _Gather) -> None:
        with self._lock:
            self._live.add(g)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.resolution_s):
            with self._lock:
                live = list(self._live)
            now = time.monotonic()
            ended = [g for g in live if g.expire(now)]
            if ended:
                with self._lock:
                    self._live.difference_update(ended)


class _BlockingCalls:
    """Daemon threads for a provider whose `get` may block: a hung provider holds
    them, never the process's exit; a bounded queue, so it cannot pile work up."""

    def __init__(self, threads: int = 4, max_waiting: int = 256):
        self.max_waiting = max_waiting
        self._queue: SimpleQueue = SimpleQueue()
        for i in range(threads):
            threading.Thread(target=self._run, name=f"capflow-liquidity-{i}",
                             daemon=True).start()
        self._threads = threads

    def submit(self, fn: Callable[[], None]) -> bool:
        if self._queue.qsize() >= self.max_waiting:
            return False
        self._queue.put(fn)
        return True

    def stop(self) -> None:
        for _ in range(self._threads):
            self._queue.put(None)

    def _run(self) -> None:
        while (fn := self._queue.get()) is not None:
            fn()


class StorageHealth(Protocol):
    """Whether storage answers now; `probe` asks it again (healthy once it does)."""

    @property
    def healthy(self) -> bool: ...

    def probe(self) -> None: ...


class AllocationService:
    """The calls of the allocation ops. Given, never the System: the `[allocation]`
    section, the broker `accounts` (which account, its free cash), `to_ledger` (submit a
    command to a profile's ledger), `knows_profile`, `running` (whether capflow serves)
    and `storage` (whether it answers: a quote needs the profile's exposure)."""

    def __init__(self, cfg: AllocationConfig, accounts: Accounts, *, to_ledger: Submit,
                 knows_profile: Callable[[str], bool], running: Callable[[], bool],
                 storage: StorageHealth, instruments: Instruments | None = None):
        self.cfg = cfg
        self.accounts = accounts
        self.to_ledger = to_ledger
        self.knows_profile = knows_profile
        self.running = running
        self.storage = storage
        self.instruments = instruments or Instruments.load(self.cfg)
        self.provider = load_provider(self.cfg.liquidity)
        self._calls = _BlockingCalls() if self.provider.blocking else None
        self._sweeper = _Sweeper()

    def stop(self) -> None:
        self._sweeper.stop()
        if self._calls is not None:
            self._calls.stop()
        self.provider.close()

    # -- the calls --------------------------------------------------------------------

    def quote(self, profile_id: str, symbol: str,
              callback: Callable[[Reply], None] | None = None) -> Reply:
        """The allocation decision for `symbol` now. Resolves to a `Decision`; fails
        with `INSUFFICIENT_CAPITAL` (the decision in ``details``) when it is below the
        minimum order notional."""
        reply = Reply(callback)
        cfg = self.cfg

        def finish(g: _Gather) -> None:
            if g.error is not None:
                reply.fail(g.error)
                return
            pic = g.values[_LEDGER]
            if pic is None:
                reply.fail(Unavailable("the profile's exposure is unknown (its ledger did "
                                       f"not answer in {cfg.exposure_timeout_s} s): no "
                                       "quote", {"profile_id": profile_id}))
                return
            decision = decide(pic, symbol, self._externals(g), self.instruments, cfg)
            if decision.too_small:
                reply.fail(_too_small(decision))
            else:
                reply.resolve(decision)

        g = self._begin(reply, profile_id, symbol, finish, ledger=True)
        if g is None:
            return reply

        def pictured(r: Reply) -> None:
            out, error = r.result()
            if error is not None:
                g.fail(error)
            else:
                g.set(_LEDGER, out.result)

        self.to_ledger(profile_id, m.GetCapitalPicture(), pictured)
        return reply

    def reserve(self, profile_id: str, symbol: str, amount: Any, client_request_id: str,
                ttl_s: int | None = None,
                callback: Callable[[Reply], None] | None = None) -> Reply:
        """Reserve `amount` for `symbol`, capped by the allocation decision that the
        profile's actor makes in the same step. Resolves to the ledger's `Outcome`."""
        reply = Reply(callback)

        def finish(g: _Gather) -> None:
            if g.error is not None:
                reply.fail(g.error)
                return
            cmd = m.ReserveCapital(symbol=symbol, amount=amount,
                                   client_request_id=client_request_id, ttl_s=ttl_s,
                                   externals=self._externals(g), cause=client_request_id)
            self.to_ledger(profile_id, cmd, relay(reply))

        self._begin(reply, profile_id, symbol, finish, ledger=False)
        return reply

    def set_liquidity(self, symbol: str, raw: dict[str, Any]) -> dict[str, Any]:
        """`liquidity.set`: a pushed signal (the provider must be ``push``)."""
        inner = unwrap(self.provider)
        if not isinstance(inner, PushLiquidity):
            raise Conflict(f"the liquidity provider is {self.cfg.liquidity.provider!r}; "
                           "pushed signals need [allocation.liquidity] provider = 'push'",
                           {"provider": self.cfg.liquidity.provider})
        raw_signal = inner.set(symbol, raw)
        effective = self.provider.get(symbol)
        return {"symbol": symbol, "signal": raw_signal.to_map(),
                "effective": None if effective is None else effective.to_map()}

    # -- the parts --------------------------------------------------------------------

    def _begin(self, reply: Reply, profile_id: str, symbol: str,
               finish: Callable[[_Gather], None], *, ledger: bool) -> _Gather | None:
        """Check the request and start gathering the account's cash and the liquidity
        signal (and a ledger part, which the caller asks for); None: `reply` failed."""
        cfg = self.cfg
        try:
            account = self._check(profile_id, symbol)
            now = time.monotonic()
            parts = {_ACCOUNT: now + cfg.account_timeout_s,
                     _LIQUIDITY: now + cfg.liquidity_timeout_s}
            if ledger:
                if not self.storage.healthy:
                    self.storage.probe()  # healthy again once the database answers
                    raise Unavailable("storage is not reachable: no allocation decisions "
                                      "now")
                parts[_LEDGER] = now + cfg.exposure_timeout_s
            g = _Gather(parts, finish)
            g.on_bug = lambda: reply.fail(Internal("internal error; see the server log"))
        except Exception as exc:
            reply.fail(exc)
            return None
        self._sweeper.watch(g)
        self._ask_account(g, account, profile_id)
        self._ask_liquidity(g, symbol)
        return g

    def _check(self, profile_id: str, symbol: str) -> str:
        if not self.running():
            raise Unavailable("capflow is not running")
        if not self.knows_profile(profile_id):
            raise NotFound("profile", profile_id)
        parse_symbol(symbol)
        return self.accounts.account_for(profile_id)

    def _ask_account(self, g: _Gather, account_id: str, profile_id: str) -> None:
        g.values["account_id"] = account_id  # not a part: read by _externals
        if self.accounts.capital_account_of(profile_id) is None:
            g.values["account_applies"] = False  # another currency: no cap
            g.set(_ACCOUNT, None, "another currency")
            return
        self.accounts.free_cash(account_id, self.cfg.account_timeout_s,
                                lambda cash, note: g.set(_ACCOUNT, cash, note))

    def _ask_liquidity(self, g: _Gather, symbol: str) -> None:
        provider = self.provider

        def run() -> None:
            if g.done:  # it gave up waiting already: do not queue the provider up
                return
            try:
                g.set(_LIQUIDITY, provider.get(symbol))
            except Exception as exc:
                g.set(_LIQUIDITY, None, f"error: {exc}")

        if self._calls is None:
            run()
        elif not self._calls.submit(run):
            g.set(_LIQUIDITY, None, "busy: the provider has too many calls waiting")

    @staticmethod
    def _externals(g: _Gather) -> Externals:
        return Externals(account_id=g.values["account_id"],
                         account_cash=g.values[_ACCOUNT],
                         account_applies=g.values.get("account_applies", True),
                         account_note=g.notes.get(_ACCOUNT, ""),
                         liquidity=g.values[_LIQUIDITY],
                         liquidity_note=g.notes.get(_LIQUIDITY, ""))


def _too_small(d: Decision) -> CapflowError:
    return Denied(Denial("INSUFFICIENT_CAPITAL",
                         f"{d.max_investable} {d.currency} may be invested in {d.symbol} "
                         f"now, below the minimum order notional {d.min_order_notional}",
                         {"available": d.max_investable, "requested": d.min_order_notional,
                          "decision": d.to_map()}))
