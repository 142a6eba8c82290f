"""`SqlExecutor`: runs the writer's batches of row operations against the database, one
transaction a batch, with the owner epoch's fence first (storage/owner.py).

It runs in the server's process (``storage.writer = "thread"``) or in the storage
process (storage/writer_process.py); the group commit itself, and what a failed batch
means for the actors, is storage/writer.py; the statements it executes are built by
storage/statements.py.
"""

from __future__ import annotations

import time

from loguru import logger
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from capflow.storage.owner import Fence, Fenced, check_sql, fenced_reason
from capflow.storage.statements import Item, Statements


class SqlExecutor:
    """Runs batches of row operations against the database, one transaction a batch.

    A batch that fails on a transient error (connection lost, database locked) is
    retried with backoff; if it still fails, or fails on the data of one item (an
    integrity error), the items are retried one per transaction, so that one bad item
    cannot sink the others. `run` answers, per item, None (committed) or the error.

    With a `Fence` (scope, epoch), each transaction begins with the fence's read of the
    owner epoch (storage/owner.py) and is rolled back on a mismatch; a fenced batch is
    neither retried nor split (its items all answer the reason, which starts with
    `storage.owner.FENCED`).
    """

    def __init__(self, engine: Engine, *, retries: int = 3):
        self.engine = engine
        self.retries = retries
        self._stmts = Statements(engine.dialect.name)
        self._check = check_sql(self._stmts.sqlite)
        #: transient errors, worth a retry: SQLAlchemy's, and the driver's own (the
        #: fence's read runs on the driver's cursor)
        self._transient = (OperationalError, engine.dialect.dbapi.OperationalError)
        self._db = engine.url.render_as_string(hide_password=True)
        self._conn = None
        #: the fence of the batch being run (`run`)
        self._fence: Fence | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, items: list[Item], fence: Fence | None = None) -> list[str | None]:
        self._fence = fence  # for every transaction of this batch
        error = self._commit_with_retries(items)
        if error is None:
            return [None] * len(items)
        if len(items) == 1 or isinstance(error, Fenced):  # a fence is no one bad item
            return [_describe(error)] * len(items)
        logger.warning("storage: batch of {} failed ({}); retrying one by one",
                       len(items), error)
        statuses: list[str | None] = []
        fenced: Fenced | None = None
        for item in items:
            # taken over meanwhile: the rest is not tried
            alone = fenced or self._commit_with_retries([item], quiet=True)
            if isinstance(alone, Fenced):
                fenced = alone
                statuses.append(_describe(alone))
            else:
                statuses.append(None if alone is None else _describe(error))
        return statuses

    def _commit_with_retries(self, items: list[Item], quiet: bool = False):
        delay = 0.05
        for attempt in range(self.retries):
            try:
                self._commit(items)
                return None
            except self._transient as exc:  # lost connection, locked
                err: Exception = exc
                self._reset_connection()
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 4
            except Exception as exc:  # the data itself, or fenced: retrying will not help
                self._reset_connection()
                return exc
        if not quiet:
            logger.error("storage writer: commit failed after {} attempts: {}",
                         self.retries, err)
        return err

    def _commit(self, items: list[Item]) -> None:
        statements, probe = self._stmts.plan(items)
        if not statements:
            if probe:  # is the database there at all, and still ours?
                conn = self._connection()
                with conn.begin():
                    if self._fence is None:
                        conn.exec_driver_sql("SELECT 1").close()
                    else:
                        self._begin(conn)
            return
        conn = self._connection()
        with conn.begin():
            self._begin(conn)
            for sql, params in statements:
                conn.exec_driver_sql(sql, params)

    def _begin(self, conn) -> None:
        """The first statements of a commit transaction: on SQLite take the write lock
        now (so nothing commits between the fence's read and this commit); then the
        fence: this server's epoch must still be the scope's."""
        # on the driver's cursor: through SQLAlchemy a one-row read costs several times
        # what the database spends on it (its errors are transient too, `_TRANSIENT`)
        cur = conn.connection.cursor()
        try:
            if self._stmts.sqlite:
                cur.execute("BEGIN IMMEDIATE")
            if self._fence is None:
                return
            scope, epoch = self._fence
            cur.execute(self._check, (scope,))
            row = cur.fetchone()
        finally:
            cur.close()
        found = None if row is None else row[0]
        if found != epoch:
            raise Fenced(fenced_reason(self._db, found, epoch))

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


def _describe(error: Exception) -> str:
    if isinstance(error, Fenced):
        return str(error)  # the reason itself, which starts with FENCED
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
