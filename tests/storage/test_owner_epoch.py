"""One owner per database, whatever happens to connections: the owner epoch.

The owner lock only refuses a second server politely at start. What keeps a server that
lost it (its lock's connection cut, the database restarted, a lock file removed) from
committing beside the next owner is the epoch that owner raised, which every commit
checks under a row lock. These tests do what an attacker did: take the lock away from a
running server A, start server B on the same database, and write through A.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from loguru import logger
from sqlalchemy import event, select, text

from capflow.actors.model.errors import Unavailable
from capflow.protocol.system_ops import health
from capflow.storage import migrate, owner, schema
from capflow.storage.engine import OwnerLock, open_engine
from capflow.storage.sql_executor import SqlExecutor
from capflow.storage.writer import StorageWriter, WriteRequest

from .test_recovery import db_rows, poll
from .test_writer import journal_row, profile_row

FENCED = r"fenced: another capflow server took over .* \(epoch \d+ > \d+\)"


def cut_owner_lock(url: str) -> int:
    """Terminate the backend that holds the owner's advisory lock, as a network cut or a
    restart of the database would end it; returns how many were terminated."""
    engine = open_engine(url)
    try:
        with engine.connect() as c:
            return len(c.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = :key "
                "AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"),
                {"key": OwnerLock.PG_KEY}).all())
    finally:
        engine.dispose()


def wait_for_lock_free(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        engine = open_engine(url)
        try:
            OwnerLock(engine).acquire().release()
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            engine.dispose()


def free_cash(system) -> Decimal:
    return system.accounts.info("paper").free_cash


def takeover_then_write(url: str, a, start_b):
    """A serves alpha and beta; A loses its lock; B starts on the same database. Then
    every kind of write through A fails as fenced and commits nothing, while B works."""
    a.create_profile("alpha", "1000")
    a.create_profile("beta", "1000")
    # a resting order reaches A's paper broker: its cash is tied up while it works
    a.submit_order("alpha", "before", "BTCUSDT", "BUY", "0.001", type="LIMIT",
                   price="1000")
    cash = free_cash(a)

    b = start_b()
    b.deposit("beta", "50", "b-dep-1")

    with pytest.raises(Unavailable, match=FENCED) as exc:
        a.deposit("alpha", "100", "a-dep")  # a profile B has not touched
    assert exc.value.code == "UNAVAILABLE"
    assert db_rows(url, schema.transfers, client_request_id="a-dep") == []
    for attempt in (lambda: a.create_profile("gamma", "10"),
                    lambda: a.submit_order("alpha", "after", "BTCUSDT", "BUY", "0.001",
                                           type="LIMIT", price="1000"),
                    lambda: a.signal("alpha", "BTCUSDT", "BUY", "1000", qty="0.001",
                                     tp_pct="2", sl_pct="1", signal_id="s-after"),
                    lambda: a.set_global_state("HALTED", "from the stale server")):
        with pytest.raises(Unavailable, match=FENCED):
            attempt()
    assert db_rows(url, schema.profiles, profile_id="gamma") == []
    assert [o["client_order_id"] for o in db_rows(url, schema.orders)] == ["before"]
    assert db_rows(url, schema.signals) == []
    assert db_rows(url, schema.system_state) == []
    assert free_cash(a) == cash  # no new order reached A's broker

    assert a.fenced is not None and "epoch" in a.fenced
    h = health(a, a.started_at, "paper", False)
    assert h["status"] == "fenced" and h["fenced"] == a.fenced

    # B, the owner, goes on
    b.deposit("alpha", "25", "b-dep-2")
    b.create_profile("delta", "10")
    assert b.ledger("alpha").allocated == Decimal("1025")
    assert b.ledger("beta").allocated == Decimal("1050")
    assert b.fenced is None
    assert health(b, b.started_at, "paper", False)["status"] == "ok"


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_server_whose_lock_was_cut_cannot_commit_beside_the_next(pg_url, make_system,
                                                                   writer):
    a = make_system(pg_url, storage={"writer": writer})

    def start_b():
        assert cut_owner_lock(pg_url) == 1
        wait_for_lock_free(pg_url)
        return make_system(pg_url, storage={"writer": writer})

    takeover_then_write(pg_url, a, start_b)


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_server_whose_lock_file_was_removed_cannot_commit_beside_the_next(
        tmp_path, make_system, writer):
    """SQLite: the flock is on the lock file's inode; with the file removed a second
    server takes a lock of its own and starts. The epoch still fences the first."""
    url = f"sqlite:///{tmp_path}/capflow.db"
    a = make_system(url, storage={"writer": writer})

    def start_b():
        os.remove(tmp_path / "capflow.db.lock")
        return make_system(url, storage={"writer": writer})

    takeover_then_write(url, a, start_b)


# -- the mechanics, on SQLite and PostgreSQL -----------------------------------------------

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def items(*pids: str) -> list:
    """One writer item per profile: its profile row and a journal row."""
    return [(pid, [("insert", "profiles", profile_row(pid)),
                   ("insert", "ledger_journal", journal_row(pid, 1))], None)
            for pid in pids]


class Statements:
    """What a real engine does, from SQLAlchemy's events: the transactions it begins and
    the statements it runs through SQLAlchemy (the fence's read uses the driver's cursor
    and is not among them)."""

    def __init__(self, engine) -> None:
        self.seen: list[str] = []
        self.transactions = 0
        event.listen(engine, "before_cursor_execute", self._seen)
        event.listen(engine, "begin", self._begun)

    def _seen(self, _conn, _cursor, statement, *_args) -> None:
        self.seen.append(statement)

    def _begun(self, _conn) -> None:
        self.transactions += 1

    def count(self, word: str) -> int:
        return sum(word in s for s in self.seen)


@pytest.fixture
def db(storage_url):
    engine = open_engine(storage_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def committed_profiles(engine) -> list[str]:
    with engine.connect() as c:
        return sorted(c.execute(select(schema.profiles.c.profile_id)).scalars())


def test_the_epoch_rises_with_each_claim_and_says_who(db):
    assert owner.current(db) is None
    assert owner.claim(db, started_at=NOW) == 1
    assert owner.claim(db, started_at=NOW) == 2
    assert owner.claim(db, started_at=NOW, scope="partition-7") == 1
    with db.connect() as c:
        row = c.execute(select(schema.owner_epochs)
                        .where(schema.owner_epochs.c.scope == owner.SCOPE)).one()
    assert (row.epoch, row.pid, row.started_at) == (2, os.getpid(), NOW)
    assert row.host and row.claimed_at >= NOW


def test_a_commit_with_a_stale_epoch_writes_nothing(db):
    ours = owner.claim(db, started_at=NOW)
    executor = SqlExecutor(db)
    try:
        assert executor.run(items("a0"), (owner.SCOPE, ours)) == [None]
        taken = owner.claim(db, started_at=NOW)  # another server takes over
        stmts = Statements(db)
        statuses = executor.run(items("a1", "a2", "a3"), (owner.SCOPE, ours))
        assert len(statuses) == 3
        for status in statuses:
            assert status is not None and re.fullmatch(FENCED, status)
            assert f"(epoch {taken} > {ours})" in status
        # one transaction, stopped at its first read: not retried, not split one by one
        assert stmts.transactions == 1
        assert stmts.count("INSERT") == 0
        assert committed_profiles(db) == ["a0"]
        # the current owner's epoch commits
        assert executor.run(items("a4"), (owner.SCOPE, taken)) == [None]
        assert committed_profiles(db) == ["a0", "a4"]
    finally:
        executor.stop()


def test_a_database_locked_at_the_fence_is_retried_like_any_other(sqlite_url):
    """On SQLite the transaction's first statement takes the write lock, and another
    writer holding it past the busy timeout is transient (retried on a new connection),
    not a fence and not bad data. The holder lets go only once the retry connects."""
    engine = open_engine(sqlite_url)
    migrate.upgrade(engine)
    fence = (owner.SCOPE, owner.claim(engine, started_at=NOW))
    executor = SqlExecutor(engine)
    holder = open_engine(sqlite_url).connect()
    try:
        assert executor.run(items("d0"), fence) == [None]
        conn = executor._connection()
        conn.exec_driver_sql("PRAGMA busy_timeout=50")  # give up soon
        conn.commit()
        holder.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the lock

        def let_go(*_args) -> None:  # a new connection: the retry of the failed attempt
            if holder.in_transaction():
                holder.rollback()

        event.listen(engine, "connect", let_go)
        assert executor.run(items("d1"), fence) == [None]
        assert committed_profiles(engine) == ["d0", "d1"]
    finally:
        if holder.in_transaction():
            holder.rollback()
        holder.close()
        executor.stop()
        engine.dispose()


def test_a_fenced_writer_fails_every_later_write_without_touching_storage(db):
    critical: list[str] = []
    sink = logger.add(lambda m: critical.append(m.record["message"]), level="CRITICAL")
    writer = StorageWriter(db)
    writer.start()
    try:
        writer.own(owner.SCOPE, owner.claim(db, started_at=NOW))
        assert write(writer, "b0") is None
        owner.claim(db, started_at=NOW)
        first = write(writer, "b1")
        assert isinstance(first, Unavailable) and re.fullmatch(FENCED, first.message)
        assert writer.fenced == first.message and not writer.healthy
        stmts = Statements(db)
        for pid in ("b2", "b3"):
            later = write(writer, pid)
            assert isinstance(later, Unavailable) and later.message == writer.fenced
        assert not writer.flush(5)  # a barrier fails as well: nothing is committed now
        assert stmts.seen == [] and stmts.transactions == 0  # (before reading, below)
        assert committed_profiles(db) == ["b0"]
        assert len(critical) == 1 and writer.fenced in critical[0]
    finally:
        writer.stop()
        logger.remove(sink)


def test_a_commit_waits_for_a_takeover_in_flight_and_then_is_fenced(db, storage_url):
    """The fence's read conflicts with the claim: a commit that starts while another
    server's claim is not committed yet waits for it, then sees the new epoch. (A plain
    read on PostgreSQL, or FOR KEY SHARE, would read the old epoch and commit.)"""
    ours = owner.claim(db, started_at=NOW)
    executor = SqlExecutor(db)
    taker = open_engine(storage_url)
    statuses: list = []
    try:
        with taker.connect() as conn:
            tx = conn.begin()
            owner.claim_on(conn, started_at=NOW)  # the takeover, not committed yet
            thread = threading.Thread(
                target=lambda: statuses.extend(executor.run(items("c1"),
                                                            (owner.SCOPE, ours))))
            thread.start()
            wait_until_blocked(storage_url, thread)
            tx.commit()
        thread.join(30)
        assert not thread.is_alive()
        assert len(statuses) == 1 and statuses[0] is not None, "committed beside the owner"
        assert re.fullmatch(FENCED, statuses[0])
        assert committed_profiles(db) == []
    finally:
        executor.stop()
        taker.dispose()


def wait_until_blocked(url: str, thread: threading.Thread) -> None:
    """Until the commit in `thread` waits for a lock. PostgreSQL says so; SQLite does
    not, so there the commit gets a moment to go wrong (a correct one waits anyway)."""
    if url.startswith("sqlite"):
        thread.join(0.5)
    else:
        engine = open_engine(url)
        try:
            def waiting() -> bool:
                with engine.connect() as c:
                    return c.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND datname = current_database()")).scalar() > 0
            assert poll(lambda: waiting() or not thread.is_alive(), timeout=10)
        finally:
            engine.dispose()
    assert thread.is_alive(), "the commit did not wait for the takeover"


def write(writer: StorageWriter, pid: str) -> Exception | None:
    """Submit one profile's rows; None when committed, else the failure."""
    done, out = threading.Event(), []

    def failed(exc: Exception) -> None:
        out.append(exc)
        done.set()

    writer.submit(WriteRequest(pid, items(pid)[0][1], on_commit=done.set, on_fail=failed))
    assert done.wait(30)
    return out[0] if out else None


def test_an_idle_server_finds_out_it_was_fenced_without_a_write(tmp_path, make_system):
    """Nothing is written through A after B took the database over: A's own periodic
    check of the owner epoch (every OWNER_CHECK_S) fences it all the same, so its health
    says so before a client's write fails."""
    from capflow.actors import system as system_mod

    url = f"sqlite:///{tmp_path}/capflow.db"
    a = make_system(url)
    a.create_profile("alpha", "1000")
    os.remove(tmp_path / "capflow.db.lock")
    make_system(url)
    deadline = time.monotonic() + system_mod.OWNER_CHECK_S + 5
    while a.fenced is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert a.fenced is not None and "epoch" in a.fenced
    assert health(a, a.started_at, "paper", False)["status"] == "fenced"
