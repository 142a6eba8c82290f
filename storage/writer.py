"""The group-commit writer: one thread that turns many actors' writes into few commits.

Actors hand over a `WriteRequest` (row operations + the ledger snapshot) and go on with
their next message; the writer drains everything pending into one transaction, commits,
and only then runs each request's `on_commit` (which acknowledges to the client). So no
acknowledgement precedes its commit, and throughput does not collapse to one fsync per
request.

Failure handling: a batch that fails on a transient error (connection lost, database
locked) is retried with backoff; if it still fails, or fails on the data of one request
(an integrity error), the requests are retried one per transaction so that one bad
request cannot sink the others. A profile whose write failed is *fenced*: its later
writes of the same generation fail too, until its actor reloads from storage and moves
to the next generation (`LedgerActor` on `Resync`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

from loguru import logger
from sqlalchemy import Engine, Table, bindparam
from sqlalchemy.exc import OperationalError

from actors.errors import Unavailable
from storage import schema

Op = tuple[str, str, dict[str, Any]]  # ("insert" | "update", table name, row)

#: Order of execution inside one transaction: every insert before any update, so a row
#: inserted and updated in the same batch is updated after it exists.
_INSERT_ORDER = ("profiles", "ledger_snapshots", "transfers", "reservations", "orders",
                 "positions", "fills", "ledger_journal")
_UPDATE_ORDER = ("reservations", "orders", "positions", "profiles", "ledger_snapshots")
_TABLES: dict[str, Table] = {t.name: t for t in schema.metadata.sorted_tables}


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


class _Statements:
    """Compiled-once Core statements: plain inserts, and updates by primary key."""

    def __init__(self) -> None:
        self._updates: dict[tuple[str, tuple[str, ...]], Any] = {}

    @staticmethod
    def insert(table: str):
        return _TABLES[table].insert()

    def update(self, table: str, columns: tuple[str, ...]):
        key = (table, columns)
        stmt = self._updates.get(key)
        if stmt is None:
            t = _TABLES[table]
            pk = t.primary_key.columns.values()[0]
            stmt = (t.update().where(pk == bindparam("pk_"))
                    .values({c: bindparam("v_" + c) for c in columns if c != pk.name}))
            self._updates[key] = stmt
        return stmt, _TABLES[table].primary_key.columns.values()[0].name


class StorageWriter:
    def __init__(self, engine: Engine, *, max_batch: int = 256, retries: int = 3,
                 on_fenced: Callable[[set[str]], None] | None = None):
        self.engine = engine
        self.max_batch = max_batch
        self.retries = retries
        self.on_fenced = on_fenced
        self._queue: SimpleQueue[WriteRequest | None] = SimpleQueue()
        self._stmts = _Statements()
        self._done: dict[str, int] = {}
        self._fenced: dict[str, int] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._conn = None
        self.batches = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._run, name="capflow-writer", daemon=True)

    # -- API for actors ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, req: WriteRequest) -> None:
        with self._close_lock:  # so no request can slip in behind the stop marker
            if not self._closed:
                self._queue.put(req)
                return
        self._fail(req, Unavailable("storage writer is stopped"))

    def done_seq(self, profile_id: str) -> int:
        """The seq of the last request of this profile that is committed or failed."""
        return self._done.get(profile_id, 0)

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
        if self._conn is not None:
            self._conn.close()

    def _process(self, batch: list[WriteRequest]) -> None:
        live = []
        for req in batch:
            fence = self._fenced.get(req.profile_id) if req.profile_id else None
            if fence is not None and req.gen <= fence:
                self._fail(req, Unavailable("an earlier write of this profile failed"))
            else:
                live.append(req)
        if not live:
            return
        error = self._commit_with_retries(live)
        if error is None:
            self._acknowledge(live)
            return
        if len(live) > 1:
            logger.warning("storage writer: batch of {} failed ({}); retrying one by one",
                           len(live), error)
            for req in live:
                if self._commit_with_retries([req], quiet=True) is None:
                    self._acknowledge([req])
                else:
                    self._fence_and_fail(req, error)
        else:
            self._fence_and_fail(live[0], error)

    def _commit_with_retries(self, reqs: list[WriteRequest], quiet: bool = False):
        delay = 0.05
        for attempt in range(self.retries):
            try:
                self._commit(reqs)
                return None
            except OperationalError as exc:  # transient: lost connection, locked
                err: Exception = exc
                self._reset_connection()
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 4
            except Exception as exc:  # the data itself: retrying will not help
                self._reset_connection()
                return exc
        if not quiet:
            logger.error("storage writer: commit failed after {} attempts: {}",
                         self.retries, err)
        return err

    def _commit(self, reqs: list[WriteRequest]) -> None:
        inserts: dict[str, list[dict]] = {}
        updates: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
        snapshots: dict[str, dict] = {}
        for req in reqs:
            for kind, table, row in req.ops:
                if kind == "insert":
                    inserts.setdefault(table, []).append(row)
                else:
                    updates.setdefault((table, tuple(row)), []).append(row)
            if req.snapshot is not None:
                snapshots[req.profile_id] = req.snapshot
        if snapshots:
            row = next(iter(snapshots.values()))
            updates[("ledger_snapshots", tuple(row))] = list(snapshots.values())
        if not inserts and not updates:
            return
        conn = self._connection()
        with conn.begin():
            for table in _INSERT_ORDER:
                rows = inserts.get(table)
                if rows:
                    conn.execute(self._stmts.insert(table), rows)
            for table in _UPDATE_ORDER:
                for (name, cols), rows in updates.items():
                    if name != table:
                        continue
                    stmt, pk = self._stmts.update(table, cols)
                    conn.execute(stmt, [{"pk_" if k == pk else "v_" + k: v
                                         for k, v in r.items()} for r in rows])

    def _acknowledge(self, reqs: list[WriteRequest]) -> None:
        self.batches += 1
        self.requests += len(reqs)
        for req in reqs:
            if req.profile_id is not None:
                self._done[req.profile_id] = req.seq
            if req.on_commit is not None:
                try:
                    req.on_commit()
                except Exception:
                    logger.exception("storage writer: on_commit callback failed")

    def _fence_and_fail(self, req: WriteRequest, error: Exception) -> None:
        if req.profile_id is not None:
            self._fenced[req.profile_id] = max(req.gen, self._fenced.get(req.profile_id, -1))
            if self.on_fenced is not None:
                try:
                    self.on_fenced({req.profile_id})
                except Exception:
                    logger.exception("storage writer: on_fenced callback failed")
        logger.error("storage writer: write for profile {} failed: {}", req.profile_id, error)
        self._fail(req, Unavailable("storage is not reachable; the write was not made"))

    def _fail(self, req: WriteRequest, exc: Exception) -> None:
        if req.profile_id is not None:
            self._done[req.profile_id] = max(req.seq, self._done.get(req.profile_id, 0))
        if req.on_fail is not None:
            try:
                req.on_fail(exc)
            except Exception:
                logger.exception("storage writer: on_fail callback failed")

    def _connection(self):
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _reset_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None


class NullWriter:
    """Storage off: every write "commits" at once, in the caller's thread. For benches
    and for embedding without durability; never the server default."""

    batches = requests = 0

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
