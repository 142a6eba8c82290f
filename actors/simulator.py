"""`MarketSimulatorActor`: moves the simulated market (capflow.actors.model.market) in
time, step by step or in real time, and hands every step's ticks to its subscribers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import pykka
from loguru import logger

from capflow.actors.model.clock import Clock
from capflow.actors.model.market import MarketSimulator
from capflow.actors.model.settings import SimulatorConfig, SymbolConfig
from capflow.actors.model.ticks import Tick

#: most steps one `advance` call may run
MAX_ADVANCE = 10_000_000

Deliver = Callable[[list["Tick"]], None]


# -- helpers -----------------------------------------------------------------------------


# -- the price process -------------------------------------------------------------------


# -- replay ------------------------------------------------------------------------------


# -- the simulator -----------------------------------------------------------------------


# -- the actor ---------------------------------------------------------------------------


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
                self._ref.tell(message)
            except pykka.ActorDeadError:
                return


class MarketSimulatorActor(pykka.ThreadingActor):
    """Owns a `MarketSimulator`; hands every step's ticks to its subscribers.

    Each step updates `board` (symbol -> latest Tick; other threads read it with
    ``board.get(symbol)`` without asking the actor), then calls every subscriber in
    subscription order, then `publish`, all inside the actor thread with the same list
    (do not mutate it). A callback that raises is logged and skipped.

    Step mode: only `advance(n)` moves the market. `start_realtime()` advances it one
    step every ``tick_interval_s`` until `stop_realtime()` or the actor stops.
    """

    use_daemon_thread = True

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
                         ) -> tuple[pykka.ActorRef[MarketSimulatorActor], dict[str, Tick]]:
        """Start the actor; return its ref and its price board."""
        board: dict[str, Tick] = {}
        ref = cls.start(config, clock, publish, board=board)
        return ref, board

    # -- lifecycle --

    def on_start(self) -> None:
        for tick in self._sim.opening_quotes():
            self.board.setdefault(tick.symbol, tick)

    def on_stop(self) -> None:
        self.stop_realtime()
        self._sim.close()

    def on_failure(self, *exc_info: Any) -> None:  # pragma: no cover -- defensive
        self.stop_realtime()
        self._sim.close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _RealtimeTick):
            self._on_realtime_tick(message)
            return None
        return super().on_receive(message)

    # -- public API (call through ``ref.proxy()``) --

    def subscribe(self, key: str, deliver: Deliver) -> None:
        """Deliver every step's ticks to `deliver`; a known key replaces its callback."""
        self._subscribers[key] = deliver

    def unsubscribe(self, key: str) -> bool:
        return self._subscribers.pop(key, None) is not None

    def advance(self, n: int) -> int:
        """Run `n` steps (1..10_000_000); the number of steps that produced ticks.

        Fewer than `n` only when nothing is left to tick (replay used up, nothing
        simulated).
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ADVANCE:
            raise ValueError(f"n must be an integer from 1 to {MAX_ADVANCE}, not {n!r}")
        done = 0
        for _ in range(n):
            if not self._step():
                break
            done += 1
        return done

    def ensure_symbol(self, symbol: str, price: Decimal) -> bool:
        return self._sim.ensure_symbol(symbol, price)

    def last(self, symbol: str) -> Tick | None:
        return self._sim.last(symbol)

    def symbols(self) -> list[str]:
        return self._sim.symbols()

    def spec(self, symbol: str) -> SymbolConfig | None:
        return self._sim.spec(symbol)

    def now(self) -> datetime:
        """Simulated time of the last step."""
        return self._sim.now

    def start_realtime(self) -> bool:
        """Advance one step every ``tick_interval_s``; False if already running."""
        if self._ticker is not None:
            return False
        interval = self.config.tick_interval_s
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"tick_interval_s must be greater than zero, not {interval!r}")
        self._generation += 1
        self._ticker = _Ticker(self.actor_ref, interval, self._generation)
        self._ticker.start()
        return True

    def stop_realtime(self) -> bool:
        """Stop the real-time ticks (none is delivered after this returns)."""
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
            self.stop_realtime()

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
