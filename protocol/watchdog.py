"""A watchdog for one long-lived thread: it fails loudly instead of letting a process
look alive while it no longer works.

The watched thread stamps a heartbeat once per turn of its loop (`beat`). The watchdog
checks, a few times per `stall_s`, that the thread is alive and that its last beat is
recent; the first time either is false it calls `fire(reason)` once and ends. A thread
that ends on purpose calls `stop` first, so an orderly stop is never reported. Other
threads the watched one depends on (`also`: name -> thread) are checked for life too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self, name: str, thread: threading.Thread, stall_s: float,
                 fire: Callable[[str], None], also: dict[str, threading.Thread] | None = None):
        self.name = name
        self.stall_s = stall_s
        self._thread = thread
        self._also = dict(also or {})
        self._fire = fire
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._died: str | None = None
        self._watcher = threading.Thread(target=self._run, name=f"{name}-watchdog",
                                         daemon=True)

    def start(self) -> Watchdog:
        self._last = time.monotonic()
        self._watcher.start()
        return self

    def beat(self) -> None:
        """Called by the watched thread once per turn of its loop."""
        self._last = time.monotonic()

    def died(self, reason: str) -> None:
        """Called by the watched thread as it ends by accident: no need to wait for the
        next check."""
        self._died = reason
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._watcher.is_alive() and self._watcher is not threading.current_thread():
            self._watcher.join(5)

    def check(self) -> str | None:
        """What is wrong with the watched thread now, or None."""
        if self._died is not None or not self._thread.is_alive():
            return f"the {self.name} thread died" + (f": {self._died}" if self._died else "")
        for name, other in self._also.items():
            if not other.is_alive():
                return f"the {name} thread died"
        quiet = time.monotonic() - self._last
        if quiet > self.stall_s:
            return (f"the {self.name} thread is stalled: no turn of its loop for "
                    f"{quiet:.1f} s (limit {self.stall_s:g} s)")
        return None

    def _run(self) -> None:
        interval = min(1.0, self.stall_s / 4)
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            reason = self.check()
            if reason is not None:
                if not self._stopped.is_set():
                    self._fire(reason)
                return
