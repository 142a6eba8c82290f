"""One timer thread for all actors: reservation expiries and idle passivation.

A thread per timer, or per actor, would not scale to many profiles; this keeps a heap
of (due time, profile) and tells the owning actor when its time has come. Time is read
from the injected clock, so a test can move it by hand and call `run_due()`.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from datetime import datetime

from loguru import logger


class Scheduler:
    def __init__(self, clock, fire: Callable[[str], None], *, tick_s: float = 1.0,
                 on_tick: Callable[[], None] | None = None):
        self.clock = clock
        self.fire = fire
        self.tick_s = tick_s
        self.on_tick = on_tick
        self._heap: list[tuple[datetime, str]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="capflow-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(5)

    def schedule(self, profile_id: str, when: datetime) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, profile_id))
            if self._heap[0][1] == profile_id:
                self._cond.notify()

    def run_due(self, now: datetime | None = None) -> int:
        """Fire every timer due at `now`; returns how many profiles were told."""
        now = now or self.clock.now()
        due: list[str] = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[1])
        fired = set()
        for pid in due:
            if pid not in fired:
                fired.add(pid)
                try:
                    self.fire(pid)
                except Exception:
                    logger.exception("timer for profile {} failed", pid)
        return len(fired)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                wait = self.tick_s
                if self._heap:
                    ahead = (self._heap[0][0] - self.clock.now()).total_seconds()
                    wait = max(0.0, min(wait, ahead))
                if wait > 0:
                    self._cond.wait(wait)
                if self._stopped:
                    return
            self.run_due()
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:
                    logger.exception("scheduler tick failed")
