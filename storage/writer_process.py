"""`ProcessExecutor`: the writer's SQL runs in a separate storage process.

Every SQLite (or psycopg) call gives up the interpreter lock and must win it back from
the actor, caller and socket threads; under load that made each commit several times
slower than the disk needs. In its own process the SQL has an interpreter of its own:
the server's writer thread batches, sends the batch down a pipe, and waits (without
holding the lock) for one status per request.

The storage process is a plain ``python -m capflow.storage.writer_process`` child talking
length-prefixed msgpack frames over its stdin / stdout (not `multiprocessing`, which
would re-import an embedding program's main module). It owns the database: it takes the
owner lock (`storage.engine.OwnerLock`) and keeps it until it exits. If the server dies,
the child sees its stdin close, finishes at most the batch it is committing (never
acknowledged, so allowed) and exits; a server started meanwhile waits for the lock
rather than racing that last commit. If the child dies or hangs, the batch in flight
fails as UNAVAILABLE (its profiles reload from storage) and the next batch starts a new
child.

The lock only keeps a second server from starting. Each batch carries the owner epoch
the server claimed (storage/owner.py), and the child checks it first in every commit
transaction: a child whose lock was lost (its connection cut, the database restarted)
cannot commit once another server has taken over.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgpack
from loguru import logger

from capflow.actors.model.errors import Unavailable
from capflow.storage.owner import Fence
from capflow.storage.statements import sqlite_value

_DECIMAL, _DATETIME = 1, 2
_LEN = struct.Struct(">I")


def _typed(obj: Any) -> Any:
    """PostgreSQL: keep Decimal and datetime typed across the pipe."""
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_DECIMAL, format(obj, "f").encode())
    if isinstance(obj, datetime):
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    raise TypeError(f"cannot send {type(obj).__name__} to the storage process")


def _stored(obj: Any) -> Any:
    """SQLite: send each value already as the text the column type stores."""
    value = sqlite_value(obj)
    if value is obj:
        raise TypeError(f"cannot send {type(obj).__name__} to the storage process")
    return value


def _ext(code: int, data: bytes) -> Any:
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _DATETIME:
        return datetime.fromisoformat(data.decode())
    return msgpack.ExtType(code, data)


def _read_exact(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("the pipe closed")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LEN.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_frame(fd: int) -> bytes:
    (n,) = _LEN.unpack(_read_exact(fd, _LEN.size))
    return _read_exact(fd, n)


# -- the storage process ---------------------------------------------------------------

def child_main(url: str, retries: int, lock_wait_s: float, cpus: str,
               synchronous: str = "FULL") -> int:
    """Take the database, then run batches until stdin closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this stops
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the frame channel
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    from capflow.storage.engine import OwnerLock, open_engine
    from capflow.storage.sql_executor import SqlExecutor

    try:
        engine = open_engine(url, pool_size=1, synchronous=synchronous)
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
        _write_frame(out_fd, msgpack.packb(["error", str(exc)]))
        return 1
    _write_frame(out_fd, msgpack.packb(["ready", None]))
    try:
        while True:
            try:
                data = _read_frame(0)
            except (EOFError, OSError):
                break
            fence, items = msgpack.unpackb(data, ext_hook=_ext, raw=False, use_list=True)
            statuses = executor.run([tuple(item) for item in items],
                                    None if fence is None else tuple(fence))
            try:
                _write_frame(out_fd, msgpack.packb(statuses))
            except OSError:
                break
    finally:
        executor.stop()
        lock.release()
        engine.dispose()
    return 0


# -- the server side -------------------------------------------------------------------

class ProcessExecutor:
    def __init__(self, url: str, *, retries: int = 3, lock_wait_s: float = 15.0,
                 batch_timeout_s: float = 120.0, cpus: set[int] | None = None,
                 synchronous: str = "FULL"):
        self.url = url
        self.synchronous = synchronous
        self.retries = retries
        self.lock_wait_s = lock_wait_s
        self.batch_timeout_s = batch_timeout_s
        self.cpus = ",".join(map(str, sorted(cpus))) if cpus else ""
        self._default = _stored if url.startswith("sqlite") else _typed
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        from capflow.actors.logs import for_child

        proc = subprocess.Popen(
            [sys.executable, "-m", "capflow.storage.writer_process", self.url,
             str(self.retries),
             str(self.lock_wait_s), self.cpus, self.synchronous, for_child()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            # a process group of its own: a Ctrl-C at the terminal goes to the server,
            # which decides when this stops (it ignores SIGINT too, but only once its
            # imports are done: one during them would kill it with a traceback)
            process_group=0)
        try:
            kind, detail = msgpack.unpackb(self._recv(proc, self.lock_wait_s + 30))
        except Exception as exc:
            kind, detail = "error", f"the storage process did not start: {exc}"
        if kind != "ready":
            self._end(proc)
            raise Unavailable(f"storage: {detail}")
        self.proc = proc

    @staticmethod
    def _recv(proc: subprocess.Popen, timeout: float) -> bytes:
        fd = proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError("the storage process did not answer in time")
        return _read_frame(fd)

    def run(self, items: list, fence: Fence | None = None) -> list[str | None]:
        if self.proc is None:  # the previous child failed: start a new one
            try:
                self.restarts += 1
                self.start()
            except Exception as exc:
                return [f"storage process unavailable: {exc}"] * len(items)
        try:
            # the fence goes with every batch: a replacement child checks it as well
            payload = msgpack.packb([fence, items], default=self._default,
                                    use_bin_type=True)
            _write_frame(self.proc.stdin.fileno(), payload)
            statuses = msgpack.unpackb(self._recv(self.proc, self.batch_timeout_s))
        except Exception as exc:  # died, hung, or answered garbage: the outcome is unknown
            logger.error("storage process failed ({}); the next batch starts a new one", exc)
            self.stop()
            return [f"storage process failed: {exc}"] * len(items)
        return statuses

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            self._end(proc)

    @staticmethod
    def _end(proc: subprocess.Popen) -> None:
        try:
            proc.stdin.close()  # the child sees its stdin close and exits
        except OSError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its pid: only the process this executor started
            proc.wait(5)
        proc.stdout.close()


if __name__ == "__main__":
    from capflow.actors.logs import in_child

    in_child(sys.argv[6])  # log as the server does: off, or on in its format
    sys.exit(child_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4],
                        sys.argv[5]))
