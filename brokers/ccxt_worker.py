"""`VenueWorker`: the one thread that does all of a venue account's I/O (`ccxt_engine`
and `ccxt_venue` for the live adapter, `paper_venue` for a dry run's prices), so the
account manager's mailbox never waits on the venue. Jobs come before polls, and order
sends before everything else."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from loguru import logger


class VenueWorker:
    """A thread that runs jobs in order and a poll between them; results go to an outbox
    the owner drains on its own thread after `wake` tells it to.

    Jobs come before polls: a poll is due only when no job waits, and a poll under way
    runs the order sends waiting at the head of the queue (`send`) between its requests
    and while one of its requests waits for the venue's limit (`sends_first`), so an
    order goes out after at most one poll request, not a whole poll. Jobs keep their
    order among themselves (a cancel never overtakes the job that placed or adopted its
    order). A reconciliation's cut turns that off while it is taken (`yielding`)."""

    def __init__(self, name: str, poll_s: float, poll: Callable[[], None],
                 wake: Callable[[], None], idle: Callable[[], None] | None = None):
        self._idle = idle  # instead of a poll, while not polling
        self._jobs: collections.deque = collections.deque()  # (fn, args, is a send)
        self._ready = threading.Condition()
        self._out: collections.deque = collections.deque()
        self._poll_s = poll_s
        self._poll = poll
        self._wake = wake
        self._woken = False  # a wake is on its way: the owner's next drain takes all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.polling = False  # no polls before the first connect succeeded
        #: True while a poll runs that sends may interrupt (`sends_first`)
        self.yielding = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable, *args) -> None:
        self._put((fn, args, False))

    def send(self, fn: Callable, *args) -> None:
        """An order send or cancel: also run between the requests of a poll."""
        self._put((fn, args, True))

    def _put(self, job) -> None:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()

    def sends_first(self) -> None:
        """On the worker, between two requests of a poll (or while one waits for its
        limit): run the sends at the head of the queue, unless a cut is being taken or a
        send runs already (sends keep their order)."""
        if not self.yielding or threading.current_thread() is not self._thread:
            return
        self.yielding = False
        try:
            while self._jobs and self._jobs[0][2]:
                with self._ready:
                    if not self._jobs or not self._jobs[0][2]:
                        return
                    job = self._jobs.popleft()
                self._do(job)
        finally:
            self.yielding = True

    def post(self, item) -> None:
        self._out.append(item)
        self.wake()

    def wake(self) -> None:
        """Have the owner step (and drain) soon: one wake at a time, since a drain takes
        everything posted until then."""
        if not self._woken:
            self._woken = True
            self._wake()

    def drain(self) -> list:
        """On the owner's thread: what was posted, oldest first."""
        self._woken = False
        items = []
        while True:
            try:
                items.append(self._out.popleft())
            except IndexError:
                return items

    def _do(self, job) -> None:
        try:
            job[0](*job[1])
        except Exception:
            logger.exception("venue worker: a job failed")

    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll_s
        while True:
            with self._ready:
                while not self._jobs and not self._stop.is_set():
                    left = next_poll - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                if self._stop.is_set() and not self._jobs:
                    return  # the jobs handed over before `stop` are done first
                job = self._jobs.popleft() if self._jobs else None
            if job is not None:
                self._do(job)
                continue
            try:
                if self.polling:
                    self.yielding = True
                    self._poll()
                elif self._idle is not None:
                    self._idle()
            except Exception:
                logger.exception("venue worker: a poll failed")
            finally:
                self.yielding = False
            next_poll = time.monotonic() + self._poll_s
