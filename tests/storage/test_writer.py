"""The group-commit writer (storage/writer.py) against a real database file (and the
throwaway PostgreSQL): batching, acknowledgement only after commit, one bad request
failing alone and barring its profile, and no hang after stop."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from capflow.actors.model.errors import Unavailable
from capflow.storage import migrate, schema
from capflow.storage.engine import open_engine
from capflow.storage.writer import StorageWriter, WriteRequest

WAIT = 10.0  # seconds; every wait below returns as soon as its event is set
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def profile_row(pid: str) -> dict:
    return {"profile_id": pid, "currency": "USDT", "account_id": None, "risk_profile": None,
            "state": "ACTIVE", "state_reason": "", "state_by": "test", "state_at": NOW,
            "created_at": NOW}


def journal_row(pid: str, seq: int) -> dict:
    return {"profile_id": pid, "seq": seq, "ts": NOW, "type": "Test",
            "causation_id": f"{pid}/{seq}", "payload": "{}"}


class Outcome:
    """Collects one request's callbacks."""

    def __init__(self) -> None:
        self.committed = threading.Event()
        self.failed = threading.Event()
        self.error: Exception | None = None
        self.calls = 0
        self._lock = threading.Lock()

    def on_commit(self) -> None:
        with self._lock:
            self.calls += 1
        self.committed.set()

    def on_fail(self, exc: Exception) -> None:
        with self._lock:
            self.calls += 1
            self.error = exc
        self.failed.set()

    def wait(self) -> str:
        """'commit' or 'fail', whichever came; fails the test if neither did in time."""
        for _ in range(int(WAIT / 0.01)):
            if self.committed.is_set():
                return "commit"
            if self.failed.is_set():
                return "fail"
            self.committed.wait(0.01)
        pytest.fail("no callback in time")


class Harness:
    def __init__(self, url: str):
        self.url = url
        self.engine = open_engine(url)
        migrate.upgrade(self.engine)
        self.reader = open_engine(url)  # a separate engine: separate connections
        self.barred: list[set[str]] = []
        self.barred_event = threading.Event()
        self.writer = StorageWriter(self.engine, on_write_failed=self._on_write_failed)
        self.writer.start()

    def _on_write_failed(self, pids: set[str]) -> None:
        self.barred.append(set(pids))
        self.barred_event.set()

    def request(self, pid: str | None, ops, *, gen: int = 0, seq: int = 0, **kw):
        out = Outcome()
        return out, WriteRequest(pid, ops, gen=gen, seq=seq, on_commit=kw.get(
            "on_commit", out.on_commit), on_fail=out.on_fail)

    def gate(self) -> threading.Event:
        """Block the writer thread (in an on_commit) until the returned event is set, so
        everything submitted meanwhile lands in one batch."""
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(WAIT)

        self.writer.submit(WriteRequest(None, [], on_commit=hold))
        assert entered.wait(WAIT)
        return release

    def profile_exists(self, pid: str) -> bool:
        with self.reader.connect() as c:
            return c.execute(select(func.count()).select_from(schema.profiles)
                             .where(schema.profiles.c.profile_id == pid)).scalar() == 1

    def journal_seqs(self, pid: str) -> list[int]:
        with self.reader.connect() as c:
            return sorted(c.execute(select(schema.ledger_journal.c.seq)
                                    .where(schema.ledger_journal.c.profile_id == pid))
                          .scalars())

    def close(self) -> None:
        self.writer.stop()
        self.reader.dispose()
        self.engine.dispose()


@pytest.fixture
def harness(storage_url):
    h = Harness(storage_url)
    yield h
    h.close()


def test_many_threads_are_grouped_and_acknowledged_after_commit(harness):
    threads, per_thread = 8, 25
    seen: dict[str, bool] = {}
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def acknowledged(pid: str, out: Outcome):
        def cb() -> None:
            visible = harness.profile_exists(pid)  # from another connection, right now
            with lock:
                seen[pid] = visible
            out.on_commit()
        return cb

    def producer(t: int) -> None:
        barrier.wait(WAIT)
        for i in range(per_thread):
            pid = f"p{t}-{i}"
            out = Outcome()
            with lock:
                outcomes.append(out)
            harness.writer.submit(WriteRequest(
                pid, [("insert", "profiles", profile_row(pid))], seq=1,
                on_commit=acknowledged(pid, out), on_fail=out.on_fail))

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    total = threads * per_thread
    assert len(outcomes) == total
    assert [o.wait() for o in outcomes] == ["commit"] * total
    assert all(o.calls == 1 for o in outcomes)
    assert len(seen) == total
    assert all(seen.values()), [p for p, ok in seen.items() if not ok]
    assert harness.writer.requests == total
    assert 1 <= harness.writer.batches < harness.writer.requests
    with harness.reader.connect() as c:
        assert c.execute(select(func.count()).select_from(schema.profiles)).scalar() == total
    assert harness.writer.done_seq("p0-0") == 1


def test_a_bad_request_fails_alone_and_bars_its_profile(harness):
    w = harness.writer
    first, req = harness.request("dup", [("insert", "profiles", profile_row("dup"))],
                                 gen=0, seq=1)
    w.submit(req)
    assert first.wait() == "commit"
    batches_before = w.batches

    release = harness.gate()
    good1, r1 = harness.request("good1", [("insert", "profiles", profile_row("good1"))],
                                seq=1)
    bad, rb = harness.request("dup", [("insert", "profiles", profile_row("dup")),
                                      ("insert", "ledger_journal", journal_row("dup", 1))],
                              gen=0, seq=2)
    good2, r2 = harness.request("good2", [("insert", "profiles", profile_row("good2")),
                                          ("insert", "ledger_journal",
                                           journal_row("good2", 1))], seq=1)
    for r in (r1, rb, r2):
        w.submit(r)
    release.set()

    assert good1.wait() == "commit"
    assert good2.wait() == "commit"
    assert bad.wait() == "fail"
    assert isinstance(bad.error, Unavailable)
    assert not bad.committed.is_set() and bad.calls == 1
    assert harness.profile_exists("good1") and harness.profile_exists("good2")
    assert harness.journal_seqs("good2") == [1]
    assert harness.journal_seqs("dup") == []  # the bad request's other row was not kept
    assert harness.barred_event.wait(WAIT)
    assert harness.barred == [{"dup"}]
    assert w.done_seq("dup") == 2
    assert w.batches > batches_before

    # the barred profile: the same generation keeps failing, without touching storage
    same_gen, rs = harness.request("dup", [("insert", "ledger_journal",
                                            journal_row("dup", 2))], gen=0, seq=3)
    w.submit(rs)
    assert same_gen.wait() == "fail"
    assert isinstance(same_gen.error, Unavailable)
    assert harness.journal_seqs("dup") == []
    # ... other profiles are not affected
    other, ro = harness.request("good1", [("insert", "ledger_journal",
                                           journal_row("good1", 1))], gen=0, seq=2)
    w.submit(ro)
    assert other.wait() == "commit"
    # ... and the next generation (after the actor reloaded) writes again
    next_gen, rn = harness.request("dup", [("insert", "ledger_journal",
                                            journal_row("dup", 2))], gen=1, seq=4)
    w.submit(rn)
    assert next_gen.wait() == "commit"
    assert harness.journal_seqs("dup") == [2]
    assert w.done_seq("dup") == 4
    assert harness.barred == [{"dup"}]  # not barred again


def test_insert_and_update_of_one_row_in_one_batch(harness):
    release = harness.gate()
    ins, ri = harness.request("u1", [("insert", "profiles", profile_row("u1"))], seq=1)
    upd, ru = harness.request("u1", [("update", "profiles", {
        "profile_id": "u1", "state": "HALTED", "state_reason": "test"})], seq=2)
    harness.writer.submit(ru)  # the update is queued first: the writer orders inserts first
    harness.writer.submit(ri)
    release.set()
    assert upd.wait() == "commit" and ins.wait() == "commit"
    with harness.reader.connect() as c:
        row = c.execute(select(schema.profiles).where(
            schema.profiles.c.profile_id == "u1")).one()
    assert (row.state, row.state_reason, row.currency) == ("HALTED", "test", "USDT")
    assert row.state_at == NOW


def test_submit_after_stop_fails_instead_of_hanging(harness):
    w = harness.writer
    before, rb = harness.request("s1", [("insert", "profiles", profile_row("s1"))], seq=1)
    w.submit(rb)
    w.stop()
    # what was submitted before stop() is still committed
    assert before.wait() == "commit"
    assert harness.profile_exists("s1")

    after, ra = harness.request("s2", [("insert", "profiles", profile_row("s2"))], seq=1)
    w.submit(ra)
    assert after.failed.wait(WAIT)  # answered, not left hanging
    assert isinstance(after.error, Unavailable)
    assert not after.committed.is_set() and after.calls == 1
    assert not harness.profile_exists("s2")
    w.stop()  # a second stop is harmless


def test_requests_pending_at_stop_all_get_an_answer(harness):
    """A stop with many requests in the queue: each gets exactly one callback."""
    w = harness.writer
    release = harness.gate()
    pending = []
    for i in range(50):
        out, r = harness.request(f"q{i}", [("insert", "profiles", profile_row(f"q{i}"))],
                                 seq=1)
        w.submit(r)
        pending.append(out)
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    results = [o.wait() for o in pending]
    assert all(o.calls == 1 for o in pending)
    committed = [i for i, r in enumerate(results) if r == "commit"]
    assert all(harness.profile_exists(f"q{i}") for i in committed)
    assert len(committed) == 50  # queued before stop(): committed, not dropped


def test_a_write_right_after_a_probe_commits(harness):
    """A probe (is the database there?) leaves the writer's connection as it found it:
    the next write, even a single one that is not retried one by one, commits."""
    w = harness.writer
    probe, rp = harness.request(None, [("probe", "", {})])
    w.submit(rp)
    assert probe.wait() == "commit"
    alone, ra = harness.request("after-probe", [("insert", "profiles",
                                                 profile_row("after-probe"))], seq=1)
    w.submit(ra)
    assert alone.wait() == "commit", alone.error
    assert harness.profile_exists("after-probe")
