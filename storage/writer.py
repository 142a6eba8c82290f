"""The group-commit writer: one thread that turns many actors' writes into few commits.

The journal (storage/journal.py) hands over each write as a `WriteRequest` (row
operations + the ledger snapshot) and the actor goes on with its next message; the
writer drains everything pending into one transaction, commits, and only then runs each
request's `on_commit` (which acknowledges to the client). So no acknowledgement precedes
its commit, and throughput does not collapse to one fsync per request.

Failure handling: a batch that fails on a transient error (connection lost, database
locked) is retried with backoff; if it still fails, or fails on the data of one request
(an integrity error), the requests are retried one per transaction so that one bad
request cannot sink the others. A profile whose write failed is *barred*: its later
writes of the same generation fail too, until its actor reloads from storage and moves
to the next generation (`LedgerActor` on `Resync`).

Ownership: once its server has claimed the database (`own`, storage/owner.py), every
commit transaction first checks the owner epoch and is rolled back when another server
has taken over. Such a write is not retried and not split up; the writer is *fenced*
from then on: it fails every later write with UNAVAILABLE and the reason, without
touching storage, and logs the takeover once at CRITICAL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

from loguru import logger
from sqlalchemy import Engine

from capflow.actors.model.errors import Unavailable
from capflow.storage.owner import FENCED, Fence
from capflow.storage.sql_executor import SqlExecutor
from capflow.storage.statements import Op

__all__ = ["NullWriter", "Op", "SqlExecutor", "StorageWriter", "WriteRequest"]


class WriteRequest:
    __slots__ = ("gen", "on_commit", "on_fail", "ops", "profile_id", "seq", "snapshot")

    def __init__(self, profile_id: str | None, ops: list[Op], *, gen: int = 0, seq: int = 0,
                 snapshot: dict[str, Any] | None = None,
                 on_commit: Callable[[], None] | None = None,
                 on_fail: Callable[[Exception], None] | None = None):
        self.profile_id = profile_id
        self.ops = ops
        self.gen = gen
        self.seq = seq
        self.snapshot = snapshot
        self.on_commit = on_commit
        self.on_fail = on_fail


class StorageWriter:
    def __init__(self, engine: Engine | None = None, *, executor=None, max_batch: int = 256,
                 retries: int = 3, on_write_failed: Callable[[set[str]], None] | None = None):
        #: runs the SQL: `SqlExecutor` in this process, or a `ProcessExecutor`
        self.executor = executor or SqlExecutor(engine, retries=retries)
        self.max_batch = max_batch
        self.on_write_failed = on_write_failed
        #: the scope and epoch this server claimed (`own`); None: no owner, no check
        self.fence: Fence | None = None
        #: why this writer stopped writing for good: another server took the database over
        self.fenced: str | None = None
        self._queue: SimpleQueue[WriteRequest | None] = SimpleQueue()
        self._done: dict[str, int] = {}
        #: per profile, the last generation with a failed write: its later writes fail too
        self._barred: dict[str, int] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        #: False from a batch that failed as a whole until the next commit: storage is
        #: not reachable, and reads that must not be guessed answer UNAVAILABLE
        self.healthy = True
        self._probing = False
        self._thread = threading.Thread(target=self._run, name="capflow-writer", daemon=True)

    # -- API for actors ---------------------------------------------------------------

    def start(self) -> None:
        self.executor.start()
        self._thread.start()

    def own(self, scope: str, epoch: int) -> None:
        """From now on every commit checks that `scope`'s epoch is still `epoch`. Called
        once at start, after the claim and before anything is written."""
        self.fence = (scope, epoch)

    def submit(self, req: WriteRequest) -> None:
        with self._close_lock:  # so no request can slip in behind the stop marker
            if not self._closed:
                self._queue.put(req)
                return
        self._fail(req, Unavailable("storage writer is stopped"))

    def done_seq(self, profile_id: str) -> int:
        """The seq of the last request of this profile that is committed or failed."""
        return self._done.get(profile_id, 0)

    def probe(self) -> None:
        """Check that the database answers (`healthy` follows); one probe at a time."""
        if self._probing:
            return
        self._probing = True

        def over(*_exc) -> None:
            self._probing = False

        self.submit(WriteRequest(None, [("probe", "", {})], on_commit=over, on_fail=over))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted before this call is committed or failed."""
        done = threading.Event()
        ok: list[bool] = []

        def committed() -> None:
            ok.append(True)
            done.set()

        self.submit(WriteRequest(None, [], on_commit=committed,
                                 on_fail=lambda _exc: done.set()))
        return done.wait(timeout) and bool(ok)

    def stop(self, timeout: float = 30.0) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.executor.stop()

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._process(batch)
            except Exception:  # never let the writer die: fail the batch instead
                self.healthy = False
                logger.exception("storage writer: unexpected failure")
                for req in batch:
                    self._fail(req, Unavailable("storage failure"))
            if stop:
                break
        # drain anything that raced with stop
        while True:
            try:
                req = self._queue.get_nowait()
            except Empty:
                break
            if req is not None:
                self._fail(req, Unavailable("storage writer is stopped"))

    def _process(self, batch: list[WriteRequest]) -> None:
        if self.fenced is not None:  # another server owns the database: nothing goes in
            for req in batch:
                self._fail(req, Unavailable(self.fenced))
            return
        live = []
        for req in batch:
            barred = self._barred.get(req.profile_id) if req.profile_id else None
            if barred is not None and req.gen <= barred:
                self._fail(req, Unavailable("an earlier write of this profile failed"))
            else:
                live.append(req)
        if not live:
            return
        statuses = self.executor.run([(r.profile_id, r.ops, r.snapshot) for r in live],
                                     self.fence)
        self.batches += 1
        # only what reached the database tells whether it is there (an empty request,
        # a read barrier, "commits" without it)
        reached = [error for r, error in zip(live, statuses, strict=True)
                   if r.ops or r.snapshot is not None]
        if reached:
            self.healthy = any(error is None for error in reached)
        lost = next((e for e in statuses if e is not None and e.startswith(FENCED)), None)
        if lost is not None:
            self._lose_ownership(lost)
        for req, error in zip(live, statuses, strict=True):
            if error is None:
                self._acknowledge(req)
            else:
                self._bar_and_fail(req, error)

    def _acknowledge(self, req: WriteRequest) -> None:
        self.requests += 1
        if req.profile_id is not None:
            self._done[req.profile_id] = req.seq
        if req.on_commit is not None:
            try:
                req.on_commit()
            except Exception:
                logger.exception("storage writer: on_commit callback failed")

    def _lose_ownership(self, reason: str) -> None:
        self.healthy = False
        if self.fenced is None:
            self.fenced = reason
            logger.critical("storage writer: {}; this server writes nothing from now on: "
                            "restart it to serve again", reason)

    def _bar_and_fail(self, req: WriteRequest, error: str) -> None:
        if req.profile_id is not None:
            self._barred[req.profile_id] = max(req.gen, self._barred.get(req.profile_id, -1))
            if self.on_write_failed is not None:
                try:
                    self.on_write_failed({req.profile_id})
                except Exception:
                    logger.exception("storage writer: on_write_failed callback failed")
        if error.startswith(FENCED):  # logged once, by _lose_ownership
            self._fail(req, Unavailable(error))
            return
        logger.error("storage writer: write for profile {} failed: {}", req.profile_id, error)
        self._fail(req, Unavailable("storage failed; the write may not have been made: "
                                    "retry with the same idempotency key"))

    def _fail(self, req: WriteRequest, exc: Exception) -> None:
        if req.profile_id is not None:
            self._done[req.profile_id] = max(req.seq, self._done.get(req.profile_id, 0))
        if req.on_fail is not None:
            try:
                req.on_fail(exc)
            except Exception:
                logger.exception("storage writer: on_fail callback failed")


class NullWriter:
    """Storage off: every write "commits" at once, in the caller's thread. For benches
    and for embedding without durability; never the server default."""

    batches = requests = 0
    healthy = True
    fence = fenced = None

    def own(self, scope: str, epoch: int) -> None:
        pass

    def probe(self) -> None:
        pass

    def start(self) -> None:
        pass

    def submit(self, req: WriteRequest) -> None:
        if req.on_commit is not None:
            req.on_commit()

    def done_seq(self, profile_id: str) -> int:
        return 1 << 62

    def flush(self, timeout: float = 30.0) -> bool:
        return True

    def stop(self, timeout: float = 30.0) -> None:
        pass
