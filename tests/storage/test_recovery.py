"""Restarts through `actors.system.System`, on SQLite and on PostgreSQL: what was
acknowledged before a stop is what the next start sees; idempotency keys, expiries and
the snapshot-versus-rows check all survive the restart."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from capflow.actors.model.errors import Conflict, Denied, NotFound
from capflow.storage import schema
from capflow.storage.engine import open_engine

D = Decimal


def poll(fn, *, timeout: float = 5.0, interval: float = 0.01):
    """Call fn until it returns something truthy; return its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def db_rows(url: str, table, **where):
    """Rows read straight from storage, outside the System."""
    engine = open_engine(url)
    try:
        with engine.connect() as c:
            q = select(table)
            for col, value in where.items():
                q = q.where(table.c[col] == value)
            return [r._mapping for r in c.execute(q)]
    finally:
        engine.dispose()


def all_ledgers(system, pids):
    return {pid: system.ledger(pid) for pid in pids}


def test_ledgers_survive_a_restart(storage_url, make_system, clock):
    system = make_system(storage_url, clock=clock)
    system.create_profile("alpha", "10000")
    system.create_profile("beta", "5000")
    system.create_profile("gamma")  # no capital: rebuilds to zero

    system.deposit("alpha", "500", "dep-1")
    system.deposit("gamma", "250.50", "dep-g")
    system.withdraw("beta", "200", "wd-1")
    kept = system.reserve("alpha", "BTCUSDT", "1000", "r-keep").reservation
    dropped = system.reserve("alpha", "ETHUSDT", "300", "r-drop", ttl_s=600).reservation
    system.release("alpha", dropped.reservation_id)
    to_order = system.reserve("beta", "ETHUSDT", "800", "r-order").reservation
    system.reserve_order("beta", "o-b", "ETHUSDT", "BUY", "0.5", "1000",
                         reservation_id=to_order.reservation_id)

    system.reserve_order("alpha", "o-1", "BTCUSDT", "BUY", "0.1", "5000")
    system.fill_entry("alpha", "o-1", "pos-1", "0.04", "50000", "1.5")
    system.fill_entry("alpha", "o-1", "pos-1", "0.03", "50100", "1.2")
    system.fill_exit("alpha", "pos-1", "0.02", "51000", "0.8")
    system.end_order("alpha", "o-1", "CANCELED")

    before = all_ledgers(system, ["alpha", "beta", "gamma"])
    # the numbers the sequence implies, so a wrong ledger cannot pass by staying wrong
    a = before["alpha"]
    assert (a.allocated, a.held, a.reserved_for_orders) == (D("10500"), D("1000"), D(0))
    assert a.reserved_for_positions == D("3503") - D("1000.85")
    assert (a.realized_pnl, a.fees) == (D("19.15"), D("3.50"))
    assert a.available == D("10500") + D("19.15") - D("3.50") - D("1000") - D("2502.15")
    b = before["beta"]
    assert (b.allocated, b.held, b.reserved_for_orders) == (D("4800"), D(0), D("1000"))
    assert before["gamma"].allocated == D("250.50")
    assert system.store.rebuild() == system.store.snapshots()
    system.stop()

    system = make_system(storage_url, clock=clock)
    after = all_ledgers(system, ["alpha", "beta", "gamma"])
    assert after == before
    for pid in after:
        report = system.audit(pid)
        assert report.ok, report.violations
        assert report.rebuilt == report.live
        assert system.get_profile(pid).profile.state == "ACTIVE"
    snapshots = system.store.snapshots()
    assert set(snapshots) == {"alpha", "beta", "gamma"}
    assert system.store.rebuild() == snapshots
    # the released hold stays released, the kept one is still usable
    with pytest.raises(NotFound):
        system.release("alpha", dropped.reservation_id)
    system.release("alpha", kept.reservation_id)
    assert system.ledger("alpha").held == D(0)


def test_idempotency_keys_survive_a_restart(storage_url, make_system, clock):
    system = make_system(storage_url, clock=clock)
    system.create_profile("alpha", "1000")
    first = system.reserve("alpha", "BTCUSDT", "100", "bot-1-42")
    assert first.reused is False
    dep = system.deposit("alpha", "50", "dep-42")
    assert dep.reused is False
    system.stop()

    system = make_system(storage_url, clock=clock)
    again = system.reserve("alpha", "BTCUSDT", "100", "bot-1-42")
    assert again.reused is True
    assert again.reservation.reservation_id == first.reservation.reservation_id
    assert again.reservation == first.reservation
    assert system.ledger("alpha").held == D("100")  # not held twice
    with pytest.raises(Conflict):
        system.reserve("alpha", "BTCUSDT", "101", "bot-1-42")

    dep_again = system.deposit("alpha", "50", "dep-42")
    assert dep_again.reused is True
    assert dep_again.transfer == dep.transfer
    with pytest.raises(Conflict):
        system.deposit("alpha", "51", "dep-42")
    led = system.ledger("alpha")
    assert (led.allocated, led.held) == (D("1050"), D("100"))
    assert len(db_rows(storage_url, schema.reservations, profile_id="alpha")) == 1


def test_reservation_expires_across_a_restart(storage_url, make_system, clock):
    system = make_system(storage_url, clock=clock)
    system.create_profile("alpha", "1000")
    r = system.reserve("alpha", "BTCUSDT", "250", "ttl-1", ttl_s=60).reservation
    assert system.ledger("alpha").held == D("250")
    system.stop()

    clock.advance(61)
    system = make_system(storage_url, clock=clock)
    led = poll(lambda: (v := system.ledger("alpha")).held == 0 and v)
    assert led, f"held is still {system.ledger('alpha').held}"
    assert (led.held, led.available) == (D(0), D("1000"))
    # the reservation itself is EXPIRED (its key answers with the ended hold) ...
    same = system.reserve("alpha", "BTCUSDT", "250", "ttl-1", ttl_s=60)
    assert same.reused is True
    assert same.reservation.reservation_id == r.reservation_id
    assert same.reservation.status == "EXPIRED"
    # ... and so is its row, with the expiry journaled
    (row,) = db_rows(storage_url, schema.reservations, reservation_id=r.reservation_id)
    assert row["status"] == "EXPIRED"
    assert row["end_reason"] == "ttl"
    types = [j["type"] for j in db_rows(storage_url, schema.ledger_journal,
                                        profile_id="alpha")]
    assert "ReservationExpired" in types
    assert system.store.rebuild() == system.store.snapshots()
    assert system.audit("alpha").ok


def test_reservation_expires_on_the_timer(storage_url, make_system, clock):
    system = make_system(storage_url, clock=clock)
    system.create_profile("alpha", "1000")
    short = system.reserve("alpha", "BTCUSDT", "100", "ttl-60", ttl_s=60).reservation
    system.reserve("alpha", "ETHUSDT", "40", "ttl-600", ttl_s=600)

    clock.advance(59)
    system.run_timers()
    assert system.ledger("alpha").held == D("140")  # not due yet

    clock.advance(2)
    system.run_timers()
    assert poll(lambda: system.ledger("alpha").held == D("40")), system.ledger("alpha")
    (row,) = db_rows(storage_url, schema.reservations, reservation_id=short.reservation_id)
    assert row["status"] == "EXPIRED"
    assert system.audit("alpha").ok

    clock.advance(600)
    system.run_timers()
    assert poll(lambda: system.ledger("alpha").held == 0), system.ledger("alpha")
    assert system.ledger("alpha").available == D("1000")


def test_snapshot_mismatch_at_start_goes_reduce_only(storage_url, make_system, clock):
    system = make_system(storage_url, clock=clock)
    system.create_profile("alpha", "1000")
    system.create_profile("beta", "1000")
    system.deposit("alpha", "234.56", "dep-1")
    system.reserve("alpha", "BTCUSDT", "100", "r-1")
    true_alpha = system.ledger("alpha")
    assert true_alpha.allocated == D("1234.56")
    system.stop()

    engine = open_engine(storage_url)
    try:
        with engine.begin() as c:
            changed = c.execute(schema.ledger_snapshots.update()
                                .where(schema.ledger_snapshots.c.profile_id == "alpha")
                                .values(allocated=D("99999.00"))).rowcount
        assert changed == 1
    finally:
        engine.dispose()
    (snap,) = db_rows(storage_url, schema.ledger_snapshots, profile_id="alpha")
    assert snap["allocated"] == D("99999.00")

    system = make_system(storage_url, clock=clock)
    prof = system.get_profile("alpha")
    assert prof.profile.state == "REDUCE_ONLY"
    assert prof.profile.state_reason == "LEDGER_MISMATCH"
    led = system.ledger("alpha")
    assert led.state == "REDUCE_ONLY"
    assert led.allocated == true_alpha.allocated  # runs on the rows, not the snapshot
    assert led.held == D("100")
    assert led.available == true_alpha.available
    journal = db_rows(storage_url, schema.ledger_journal, profile_id="alpha")
    assert [j["type"] for j in journal].count("LedgerMismatchDetected") == 1
    assert not [j for j in db_rows(storage_url, schema.ledger_journal, profile_id="beta")
                if j["type"] == "LedgerMismatchDetected"]
    (snap,) = db_rows(storage_url, schema.ledger_snapshots, profile_id="alpha")
    assert snap["allocated"] == true_alpha.allocated  # the snapshot is repaired
    (row,) = db_rows(storage_url, schema.profiles, profile_id="alpha")
    assert (row["state"], row["state_reason"]) == ("REDUCE_ONLY", "LEDGER_MISMATCH")

    with pytest.raises(Denied) as denied:
        system.reserve("alpha", "BTCUSDT", "10", "r-2")
    assert denied.value.code == "RISK_REJECTED"
    assert denied.value.details["reason"] == "REDUCE_ONLY"
    assert system.ledger("alpha").held == D("100")

    # the untampered profile is not affected
    beta = system.get_profile("beta")
    assert beta.profile.state == "ACTIVE"
    assert beta.ledger.allocated == D("1000")
    assert system.reserve("beta", "BTCUSDT", "10", "rb-1").reused is False
    assert system.store.rebuild() == system.store.snapshots()
    system.stop()

    # the flag is durable, and a clean start does not flag (or journal) anything again
    system = make_system(storage_url, clock=clock)
    assert system.get_profile("alpha").profile.state == "REDUCE_ONLY"
    assert system.get_profile("beta").profile.state == "ACTIVE"
    journal = db_rows(storage_url, schema.ledger_journal, profile_id="alpha")
    assert [j["type"] for j in journal].count("LedgerMismatchDetected") == 1
