"""`ProcessExecutor`: the writer's SQL runs in a child process.

Every SQLite (or psycopg) call gives up the interpreter lock and must win it back from
the actor, caller and socket threads; under load that made each commit several times
slower than the disk needs. In a child process the SQL has an interpreter of its own:
the server's writer thread batches, sends the batch down a pipe, and waits (without
holding the lock) for one status per request.

The child also owns the database: it takes the owner lock (`storage.engine.OwnerLock`)
and keeps it until it exits. If the server dies, the child sees the pipe close, finishes
at most the batch it is committing (unacknowledged, so allowed) and exits; a server
started meanwhile waits for the lock rather than racing that last commit. If the child
dies, the batch in flight fails as UNAVAILABLE (its profiles reload from storage) and a
new child is started.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgpack
from loguru import logger

from actors.errors import Unavailable

_DECIMAL, _DATETIME = 1, 2


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_DECIMAL, format(obj, "f").encode())
    if isinstance(obj, datetime):
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    raise TypeError(f"cannot send {type(obj).__name__} to the writer process")


def _ext(code: int, data: bytes) -> Any:
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _DATETIME:
        return datetime.fromisoformat(data.decode())
    return msgpack.ExtType(code, data)


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def decode(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext, raw=False, use_list=True)


def _child(conn, url: str, retries: int, lock_wait_s: float) -> None:
    """The child's whole life: take the database, then run batches until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this stops
    from storage.engine import OwnerLock, open_engine
    from storage.writer import SqlExecutor

    try:
        engine = open_engine(url, pool_size=1)
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                lock = OwnerLock(engine).acquire()
                break
            except Unavailable:  # a previous owner may still be finishing its last batch
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        executor = SqlExecutor(engine, retries=retries)
    except Exception as exc:
        conn.send_bytes(encode(["error", str(exc)]))
        return
    conn.send_bytes(encode(["ready", None]))
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                break
            statuses = executor.run([tuple(item) for item in decode(data)])
            try:
                conn.send_bytes(encode(statuses))
            except OSError:
                break
    finally:
        executor.stop()
        lock.release()
        engine.dispose()


class ProcessExecutor:
    def __init__(self, url: str, *, retries: int = 3, lock_wait_s: float = 15.0,
                 batch_timeout_s: float = 120.0):
        self.url = url
        self.retries = retries
        self.lock_wait_s = lock_wait_s
        self.batch_timeout_s = batch_timeout_s
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["storage.writer_process", "storage.writer"])
        self._conn = None
        self.proc = None
        self.restarts = 0

    def start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_child, name="capflow-storage",
                                 args=(child, self.url, self.retries, self.lock_wait_s),
                                 daemon=True)
        proc.start()
        child.close()
        if not parent.poll(self.lock_wait_s + 30):
            proc.kill()
            raise Unavailable("the storage process did not start")
        try:
            kind, detail = decode(parent.recv_bytes())
        except (EOFError, OSError):
            kind, detail = "error", "the storage process exited at start"
        if kind != "ready":
            proc.join(5)
            raise Unavailable(f"storage: {detail}")
        self._conn, self.proc = parent, proc

    def run(self, items: list) -> list[str | None]:
        if self._conn is None:  # the previous child failed: start a new one
            try:
                self.restarts += 1
                self.start()
            except Exception as exc:
                return [f"storage process unavailable: {exc}"] * len(items)
        try:
            self._conn.send_bytes(encode(items))
            if not self._conn.poll(self.batch_timeout_s):
                raise TimeoutError("the storage process did not answer in time")
            statuses = decode(self._conn.recv_bytes())
        except Exception as exc:  # died, hung, or answered garbage: the outcome is unknown
            logger.error("storage process failed ({}); the next batch starts a new one", exc)
            self.stop()
            return [f"storage process failed: {exc}"] * len(items)
        return statuses

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the child sees the pipe close and exits
            self._conn = None
        if self.proc is not None:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            self.proc = None
