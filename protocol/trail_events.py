"""How often a trailing stop's moves go out on the event stream.

Each move of a trailing stop is stored (a restart resumes it exactly), but a trail
follows every tick: the stream carries at most one `TrailMoved` per position per
``[oms] trail_event_interval_s``. A move held back goes out once the interval has
passed (the gateway asks every turn of its loop), or at once before the position's
next fill or close, so a subscriber always sees the last stop before the trigger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from capflow.actors.model.messages import PositionReduced
from capflow.actors.model.stop_messages import TrailMoved


class TrailThrottle:
    """Thread-safe: the ledgers' threads publish, the gateway's loop asks for `due`."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        #: (profile, position) -> when its last move went out
        self._sent: dict[tuple[str, str], float] = {}
        #: (profile, position) -> its latest move held back
        self._held: dict[tuple[str, str], TrailMoved] = {}

    def filter(self, events: Iterable[Any]) -> list[Any]:
        """`events` as they go out: moves within the interval held back, a held move
        put before its position's fill."""
        out: list[Any] = []
        with self._lock:
            now = self._clock()
            for e in events:
                if isinstance(e, TrailMoved):
                    key = (e.profile_id, e.position.position_id)
                    last = self._sent.get(key)
                    if last is None or now - last >= self.interval_s:
                        self._held.pop(key, None)
                        self._sent[key] = now
                        out.append(e)
                    else:
                        self._held[key] = e
                    continue
                if isinstance(e, PositionReduced):
                    key = (e.profile_id, e.position.position_id)
                    held = self._held.pop(key, None)
                    if held is not None:
                        out.append(held)
                    if e.position.status != "OPEN":
                        self._sent.pop(key, None)
                out.append(e)
        return out

    def due(self) -> list[TrailMoved]:
        """The held moves whose interval has passed (to go out now)."""
        if not self._held:
            return []
        out = []
        with self._lock:
            now = self._clock()
            for key, e in list(self._held.items()):
                if now - self._sent.get(key, 0.0) >= self.interval_s:
                    del self._held[key]
                    self._sent[key] = now
                    out.append(e)
        return out
