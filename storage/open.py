"""`open_storage`: everything capflow keeps, opened in order, and one way to close it.

Durable (the default): the engine; the owner lock, taken by the storage process or, with
the writer as a thread (or in a daemonic process, which may not start one), here; the
writer; the migrations; then the claim of the owner epoch (storage/owner.py) before
anything is read, after which every commit checks that no later server took the
database over. Storage off: the ledgers in memory and a journal that keeps nothing.

What it answers is all a server needs of storage: the journal it writes through, the
stores it reads, and `close`. A failure half-way releases what was taken.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from sqlalchemy import Engine

from capflow.storage.config import StorageConfig
from capflow.storage.control_store import ControlStore
from capflow.storage.engine import OwnerLock, describe, open_engine
from capflow.storage.journal import MemoryJournal, StorageJournal
from capflow.storage.ledger_store import LedgerStore
from capflow.storage.memory_store import MemoryLedgerStore
from capflow.storage.oms_store import OmsStore
from capflow.storage.owner import SCOPE, claim
from capflow.storage.writer import NullWriter, StorageWriter

__all__ = ["Storage", "open_storage"]


@dataclass
class Storage:
    """What `open_storage` opened. `oms_store`, `control_store`, `engine` and `epoch` are
    None with storage off."""

    #: what the actors write through (capflow.actors.model.journal.Journal)
    journal: StorageJournal | MemoryJournal
    #: reads of profiles and ledgers (LedgerStore, or MemoryLedgerStore storage off)
    ledger_store: LedgerStore | MemoryLedgerStore
    #: reads of orders, positions and fills
    oms_store: OmsStore | None
    #: reads of what the kill switch keeps (account states, flattens, breakers)
    control_store: ControlStore | None
    #: the group-commit writer under the journal (its executor: the storage process)
    writer: StorageWriter | NullWriter
    engine: Engine | None = None
    #: the owner epoch this server claimed
    epoch: int | None = None
    owner_lock: OwnerLock | None = None

    @property
    def durable(self) -> bool:
        """False: storage off, nothing is kept beyond the process."""
        return self.engine is not None

    def close(self) -> None:
        """Stop the writer (what was submitted is committed or failed first), release the
        owner lock, close the engine's connections. Every step runs; the first error is
        raised after the last. Closing twice does nothing more."""
        _release([self.writer.stop,
                  self.owner_lock.release if self.owner_lock is not None else None,
                  self.engine.dispose if self.engine is not None else None])


def open_storage(cfg: StorageConfig, *, places: Callable[[str], int],
                 started_at: datetime | None = None, lock_wait_s: float = 15.0,
                 cpus: set[int] | None = None) -> Storage:
    """Open storage as `cfg` says. `places`: a currency's decimal places; `started_at`:
    the server's start, recorded with the owner epoch; `lock_wait_s`: how long the
    storage process waits for the owner lock (a predecessor's last batch); `cpus`: the
    CPUs the storage process is pinned to (None: not pinned)."""
    if not cfg.durable:
        store = MemoryLedgerStore(places)
        writer = NullWriter()
        writer.start()
        logger.warning("storage is off: nothing is persisted")
        return Storage(MemoryJournal(store), store, None, None, writer)
    from capflow.storage.migrate import upgrade  # Alembic: only when there is a database

    engine = open_engine(cfg.url, synchronous=cfg.sqlite_synchronous)
    taken: list[Any] = [engine.dispose]
    try:
        executor = None
        use_process = cfg.writer == "process" and ":memory:" not in cfg.url
        if use_process and multiprocessing.current_process().daemon:
            logger.warning("running in a daemonic process, which may not start one: "
                           "the storage writer runs as a thread")
            use_process = False
        owner_lock = None
        if use_process:
            from capflow.storage.writer_process import ProcessExecutor

            executor = ProcessExecutor(cfg.url,  # its child takes the lock
                                       cpus=cpus, synchronous=cfg.sqlite_synchronous,
                                       lock_wait_s=lock_wait_s)
        else:
            owner_lock = OwnerLock(engine).acquire()
            taken.insert(0, owner_lock.release)
        writer = StorageWriter(engine, executor=executor, max_batch=cfg.max_batch)
        taken.insert(0, writer.stop)
        writer.start()  # holds the owner lock from here on
        upgrade(engine)
        # take the database over before loading anything: from this commit on, a server
        # that held it before (its lock lost to a cut connection) cannot commit, and each
        # of our commits checks that no later server took it
        epoch = claim(engine, started_at=started_at or datetime.now(UTC))
        writer.own(SCOPE, epoch)
    except BaseException:
        try:
            _release(taken)
        except Exception:
            logger.exception("storage: releasing after a failed open")
        raise
    logger.info("storage: {} ({} writer), owner epoch {}", describe(cfg.url),
                "process" if executor else "thread", epoch)
    return Storage(StorageJournal(writer), LedgerStore(engine, places), OmsStore(engine),
                   ControlStore(engine), writer, engine, epoch, owner_lock)


def _release(steps: list[Callable[[], Any] | None]) -> None:
    error: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
