"""Which ledger actors are alive: activation on first use, passivation when idle or
when too many are alive.

A thread per actor costs memory and makes every hand-off slower when thousands exist,
so at most `max_live` ledger actors run; the least recently used one is passivated (it
finishes its pending writes, then stops; its state is in storage) and is activated again
on its next message. A new actor of a profile waits until the previous one has retired,
so it always loads everything its predecessor wrote.

Every tell to a ledger actor goes through `tell()` under one short lock, so no message
can reach an actor after it was asked to passivate.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

import pykka
from loguru import logger

from capflow.actors.ledger_actor import LedgerActor
from capflow.actors.ledger_context import LedgerContext
from capflow.actors.model import messages as m
from capflow.actors.model.errors import NotFound
from capflow.actors.reply import Reply


class _Entry:
    __slots__ = ("last_used", "ref", "retired")

    def __init__(self, ref: pykka.ActorRef, retired: threading.Event):
        self.ref = ref
        self.retired = retired
        self.last_used = time.monotonic()


class LedgerRegistry:
    def __init__(self, ctx: LedgerContext, *, max_live: int, idle_s: float):
        self.ctx = ctx
        self.max_live = max(1, max_live)
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Entry] = OrderedDict()
        self._retiring: dict[str, threading.Event] = {}
        self._known: set[str] = set()
        self.activations = 0
        self.passivations = 0

    # -- known profiles ---------------------------------------------------------------

    def add_known(self, profile_ids: Iterable[str]) -> None:
        with self._lock:
            self._known.update(profile_ids)

    def knows(self, profile_id: str) -> bool:
        return profile_id in self._known

    def known_count(self) -> int:
        return len(self._known)

    def live_count(self) -> int:
        return len(self._live)

    # -- messaging --------------------------------------------------------------------

    def tell(self, profile_id: str, cmd: m.Command, reply: Reply) -> None:
        if profile_id not in self._known:
            reply.fail(NotFound("profile", profile_id))
            return
        with self._lock:
            for _attempt in range(2):
                entry = self._live.get(profile_id)
                if entry is None:
                    entry = self._activate(profile_id)
                else:
                    self._live.move_to_end(profile_id)
                    entry.last_used = time.monotonic()
                try:
                    entry.ref.tell((cmd, reply))
                    break
                except pykka.ActorDeadError:  # died on its own: forget it, start afresh
                    self._live.pop(profile_id, None)
            else:
                reply.fail(NotFound("profile", profile_id))
            while len(self._live) > self.max_live:
                self._passivate_locked(next(iter(self._live)))

    def tell_if_live(self, profile_id: str, cmd: m.Command) -> None:
        with self._lock:
            entry = self._live.get(profile_id)
            if entry is not None:
                try:
                    entry.ref.tell((cmd, Reply()))
                except pykka.ActorDeadError:
                    self._live.pop(profile_id, None)

    def _activate(self, profile_id: str) -> _Entry:
        predecessor = self._retiring.pop(profile_id, None)
        if predecessor is not None and predecessor.is_set():
            predecessor = None
        retired = threading.Event()
        ref = LedgerActor.start(profile_id, self.ctx, predecessor, retired)
        entry = _Entry(ref, retired)
        self._live[profile_id] = entry
        self.activations += 1
        return entry

    def _passivate_locked(self, profile_id: str) -> None:
        entry = self._live.pop(profile_id)
        self._retiring[profile_id] = entry.retired
        self.passivations += 1
        try:
            entry.ref.tell((m.Passivate(), Reply()))
        except pykka.ActorDeadError:
            entry.retired.set()

    def passivate_idle(self) -> int:
        """Passivate every actor idle for longer than `idle_s`; forget retired ones."""
        cutoff = time.monotonic() - self.idle_s
        with self._lock:
            idle = [pid for pid, e in self._live.items() if e.last_used < cutoff]
            for pid in idle:
                self._passivate_locked(pid)
            for pid in [p for p, ev in self._retiring.items() if ev.is_set()]:
                del self._retiring[pid]
        if idle:
            logger.debug("passivated {} idle ledger actors", len(idle))
        return len(idle)

    def stop_all(self, timeout: float = 30.0) -> None:
        """Passivate everything (each flushes its writes) and wait for them to retire."""
        with self._lock:
            for pid in list(self._live):
                self._passivate_locked(pid)
            waiting = list(self._retiring.values())
        deadline = time.monotonic() + timeout
        for ev in waiting:
            ev.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._retiring = {p: ev for p, ev in self._retiring.items() if not ev.is_set()}
