"""In-process event bus: events are published after their commit, to every listener.

A listener that raises is logged and skipped: a bad listener never breaks the writer
thread or the other listeners.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from loguru import logger

from capflow.actors.model.messages import Event

Listener = Callable[[Sequence[Event]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def publish(self, events: Sequence[Event]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                logger.exception("event listener {!r} failed", listener)
