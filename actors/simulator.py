"""The market simulator's actor: moves the simulated market (capflow.actors.model.market)
in time, step by step or in real time, and hands every step's ticks to its subscribers.

Like the ledger and account actors, it is spoken to with ``(message, Reply)`` pairs;
`Simulator` is the handle the rest of capflow holds (each call returns the `Reply`,
answered once the actor has handled it).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from queue import SimpleQueue
from typing import Any

import msgspec
import pykka
from loguru import logger

from capflow.actors.model.clock import Clock
from capflow.actors.model.errors import CapflowError, Internal
from capflow.actors.model.market import MarketSimulator
from capflow.actors.model.settings import SimulatorConfig, SymbolConfig
from capflow.actors.model.ticks import Tick
from capflow.actors.reply import Reply

#: most steps one `advance` call may run
MAX_ADVANCE = 10_000_000

Deliver = Callable[[list["Tick"]], None]


# -- messages -----------------------------------------------------------------------------


class Subscribe(msgspec.Struct, frozen=True):
    key: str
    deliver: Any  # Deliver


class Unsubscribe(msgspec.Struct, frozen=True):
    key: str


class Advance(msgspec.Struct, frozen=True):
    n: int


class EnsureSymbol(msgspec.Struct, frozen=True):
    symbol: str
    price: Decimal


class Last(msgspec.Struct, frozen=True):
    symbol: str


class Spec(msgspec.Struct, frozen=True):
    symbol: str


class Symbols(msgspec.Struct, frozen=True):
    pass


class Now(msgspec.Struct, frozen=True):
    pass


class StartRealtime(msgspec.Struct, frozen=True):
    pass


class StopRealtime(msgspec.Struct, frozen=True):
    pass


class _RealtimeTick(msgspec.Struct, frozen=True):
    generation: int


class _Ticker:
    """A daemon thread that tells the actor to advance one step per interval.

    At most one tick is outstanding: when the actor falls behind, ticks are skipped
    rather than queued up.
    """

    def __init__(self, ref: pykka.ActorRef[Any], interval_s: float, generation: int):
        self.generation = generation
        self.pending = threading.Event()
        self._ref = ref
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"market-ticker-{generation}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, 2 * self._interval))

    def _run(self) -> None:
        message = _RealtimeTick(self.generation)
        deadline = time.monotonic()
        while True:
            deadline += self._interval
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            now = time.monotonic()
            if now - deadline > self._interval:  # fell behind: do not burst to catch up
                deadline = now
            if self.pending.is_set():
                continue
            self.pending.set()
            try:
                self._ref.tell((message, None))
            except pykka.ActorDeadError:
                return


class MarketSimulatorActor(pykka.ThreadingActor):
    """Owns a `MarketSimulator`; hands every step's ticks to its subscribers.

    Each step updates `board` (symbol -> latest Tick; other threads read it with
    ``board.get(symbol)`` without asking the actor), then calls every subscriber in
    subscription order, then `publish`, all inside the actor thread with the same list
    (do not mutate it). A callback that raises is logged and skipped.

    Step mode: only `Advance` moves the market. `StartRealtime` advances it one step
    every ``tick_interval_s`` until `StopRealtime` or the actor stops.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox():
        return SimpleQueue()

    def __init__(self, config: SimulatorConfig, clock: Clock,
                 publish: Deliver | None = None, *, board: dict[str, Tick] | None = None):
        super().__init__()
        self.config = config
        self.board: dict[str, Tick] = {} if board is None else board
        self._sim = MarketSimulator(config, clock.now())
        self._publish = publish
        self._subscribers: dict[str, Deliver] = {}
        self._ticker: _Ticker | None = None
        self._generation = 0

    @classmethod
    def start_with_board(cls, config: SimulatorConfig, clock: Clock,
                         publish: Deliver | None = None,
                         ) -> tuple[Simulator, dict[str, Tick]]:
        """Start the actor; return its handle and its price board."""
        board: dict[str, Tick] = {}
        ref = cls.start(config, clock, publish, board=board)
        return Simulator(ref), board

    # -- lifecycle --

    def on_start(self) -> None:
        for tick in self._sim.opening_quotes():
            self.board.setdefault(tick.symbol, tick)

    def on_stop(self) -> None:
        self._stop_realtime()
        self._sim.close()

    def on_failure(self, *exc_info: Any) -> None:  # pragma: no cover -- defensive
        self._stop_realtime()
        self._sim.close()

    def on_receive(self, message: Any) -> None:
        msg, reply = message
        if type(msg) is _RealtimeTick:
            self._on_realtime_tick(msg)
            return
        try:
            value = _HANDLERS[type(msg)](self, msg)
        except (CapflowError, ValueError) as exc:
            reply.fail(exc)
        except Exception:
            logger.exception("bug while handling {}", type(msg).__name__)
            reply.fail(Internal("internal error; see the server log"))
        else:
            reply.resolve(value)

    # -- handlers ---------------------------------------------------------------------

    def _subscribe(self, msg: Subscribe) -> None:
        self._subscribers[msg.key] = msg.deliver

    def _unsubscribe(self, msg: Unsubscribe) -> bool:
        return self._subscribers.pop(msg.key, None) is not None

    def _advance(self, msg: Advance) -> int:
        n = msg.n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ADVANCE:
            raise ValueError(f"n must be an integer from 1 to {MAX_ADVANCE}, not {n!r}")
        done = 0
        for _ in range(n):
            if not self._step():
                break
            done += 1
        return done

    def _ensure_symbol(self, msg: EnsureSymbol) -> bool:
        return self._sim.ensure_symbol(msg.symbol, msg.price)

    def _last(self, msg: Last) -> Tick | None:
        return self._sim.last(msg.symbol)

    def _symbols(self, msg: Symbols) -> list[str]:
        return self._sim.symbols()

    def _spec(self, msg: Spec) -> SymbolConfig | None:
        return self._sim.spec(msg.symbol)

    def _now(self, msg: Now) -> datetime:
        return self._sim.now

    def _start_realtime(self, msg: StartRealtime) -> bool:
        if self._ticker is not None:
            return False
        interval = self.config.tick_interval_s
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"tick_interval_s must be greater than zero, not {interval!r}")
        self._generation += 1
        self._ticker = _Ticker(self.actor_ref, interval, self._generation)
        self._ticker.start()
        return True

    def _stop_realtime(self, msg: StopRealtime | None = None) -> bool:
        ticker, self._ticker = self._ticker, None
        if ticker is None:
            return False
        ticker.stop()
        return True

    # -- internals --

    def _on_realtime_tick(self, message: _RealtimeTick) -> None:
        ticker = self._ticker
        if ticker is None or message.generation != ticker.generation:
            return  # sent before stop_realtime()
        ticker.pending.clear()
        try:
            self._step()
        except Exception:
            logger.exception("market simulator step failed; real-time ticks stopped")
            self._stop_realtime()

    def _step(self) -> bool:
        ticks = self._sim.step()
        while self._sim.taken_over:
            logger.info("replay data for {} takes over from its simulation",
                        self._sim.taken_over.pop())
        if not ticks:
            return False
        board = self.board
        for tick in ticks:
            board[tick.symbol] = tick
        for key, deliver in list(self._subscribers.items()):
            try:
                deliver(ticks)
            except Exception:
                logger.exception("market data subscriber {!r} failed", key)
        if self._publish is not None:
            try:
                self._publish(ticks)
            except Exception:
                logger.exception("market data publish hook failed")
        return True


_HANDLERS: dict[type, Callable[[MarketSimulatorActor, Any], Any]] = {
    Subscribe: MarketSimulatorActor._subscribe,
    Unsubscribe: MarketSimulatorActor._unsubscribe,
    Advance: MarketSimulatorActor._advance,
    EnsureSymbol: MarketSimulatorActor._ensure_symbol,
    Last: MarketSimulatorActor._last,
    Symbols: MarketSimulatorActor._symbols,
    Spec: MarketSimulatorActor._spec,
    Now: MarketSimulatorActor._now,
    StartRealtime: MarketSimulatorActor._start_realtime,
    StopRealtime: MarketSimulatorActor._stop_realtime,
}


class Simulator:
    """The handle of a running `MarketSimulatorActor`. Each call sends one message and
    returns its `Reply` (``.get(timeout)`` waits for the answer); nothing waits unless
    the caller does."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[MarketSimulatorActor]):
        self.ref = ref

    def _ask(self, msg: Any) -> Reply:
        reply = Reply()
        self.ref.tell((msg, reply))
        return reply

    def subscribe(self, key: str, deliver: Deliver) -> Reply:
        """Deliver every step's ticks to `deliver`; a known key replaces its callback."""
        return self._ask(Subscribe(key, deliver))

    def unsubscribe(self, key: str) -> Reply:
        """True if `key` was subscribed."""
        return self._ask(Unsubscribe(key))

    def advance(self, n: int) -> Reply:
        """Run `n` steps (1..10_000_000); answers the number of steps that produced
        ticks: fewer than `n` only when nothing is left to tick (replay used up, nothing
        simulated)."""
        return self._ask(Advance(n))

    def ensure_symbol(self, symbol: str, price: Decimal) -> Reply:
        """Simulate `symbol` from `price` if it is not simulated yet (True if added)."""
        return self._ask(EnsureSymbol(symbol, price))

    def last(self, symbol: str) -> Reply:
        return self._ask(Last(symbol))

    def symbols(self) -> Reply:
        return self._ask(Symbols())

    def spec(self, symbol: str) -> Reply:
        return self._ask(Spec(symbol))

    def now(self) -> Reply:
        """Simulated time of the last step."""
        return self._ask(Now())

    def start_realtime(self) -> Reply:
        """Advance one step every ``tick_interval_s``; False if already running."""
        return self._ask(StartRealtime())

    def stop_realtime(self) -> Reply:
        """Stop the real-time ticks (none is delivered after the answer)."""
        return self._ask(StopRealtime())

    def is_alive(self) -> bool:
        return self.ref.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        self.ref.stop(timeout=timeout)
