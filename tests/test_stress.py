"""`capflow stress`: a short chaos run audits clean, and the audit itself catches a
corrupted storage row (so a silent audit cannot pass)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from capflow.bench.stress.audit import audit_storage, audit_wire, read_acks
from capflow.bench.stress.chaos import Chaos, parse_modes
from capflow.protocol.client import Client
from capflow.storage import schema as s

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


# -- a real run, with every kind of chaos -------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_short_chaos_run_loses_nothing_and_writes_its_report(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "capflow.run", "stress", "--clients", "3", "--profiles", "3",
         "--duration", "20", "--seed", "5", "--chaos", "--kill-every", "5", "--out",
         str(out), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"run folder: {out}" in proc.stdout

    report = json.loads((out / "report.json").read_text())
    audit = report["audit"]
    assert audit["ok"] and audit["violations"] == [] and audit["violation_count"] == 0
    checked = audit["checked"]
    # the audit really looked: acknowledged mutations of each kind, keys, ledgers, rows
    for name in ("storage: acknowledged reserve", "storage: acknowledged release",
                 "storage: acknowledged signal", "storage: idempotency keys",
                 "storage: ledgers", "open book: positions (wire)",
                 "storage: ledgers (wire = storage)"):
        assert checked.get(name, 0) > 0, name
    assert checked["storage: ledgers"] == 3

    # several kills, each audited at its crash point and followed by a restart
    kills = report["kills"]
    assert len(kills) == 3, kills
    assert all(k["audit_ok"] for k in kills)
    assert all(c["ok"] and c["checked"]["ledgers"] == 3
               for c in report["crash_point_audits"])
    # a stalled broker and a locked database answered TIMEOUT / UNAVAILABLE meanwhile:
    # the harness's own witness request meets each fault; and no request of a bot went
    # unanswered by the live server (the bots wait past its deadline)
    windows = {w["kind"]: w for w in report["summary"]["during_faults"]}
    assert set(windows) == {"stall", "storage"}
    for w in windows.values():  # answered by capflow, not merely unanswered
        assert w["witness"]["code"] in {"TIMEOUT", "UNAVAILABLE"}, w
        assert "NO_ANSWER" not in w["codes"], w

    # many operations from every bot, acknowledged and found in storage
    summary = report["summary"]
    # (a count, not a speed: a busy machine makes fewer in the same 20 s)
    assert summary["ok"] > 200
    assert {"allocation.quote", "allocation.reserve", "allocation.release",
            "signal.submit", "position.close"} <= set(summary["per_op"])
    assert report["bot_exit_codes"] == [0, 0, 0]
    acks = read_acks(out)
    assert {a["op"] for a in acks} >= {"reserve", "release", "signal", "close"}
    # the bots repeated some acknowledged mutations and got the same objects back
    assert sum(1 for a in acks if a.get("reused")) >= 10

    # the files of the report
    for name in ("throughput.png", "latency.png", "percentiles.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000, name
    md = (out / "summary.md").read_text()
    assert "PASS" in md and "kill" in md.lower()


def test_chaos_schedule_is_seeded_and_bounded():
    a = Chaos.plan({"kill", "stall", "storage"}, __import__("random").Random(3), 30.0, 5.0)
    b = Chaos.plan({"kill", "stall", "storage"}, __import__("random").Random(3), 30.0, 5.0)
    assert a == b
    kinds = [m for _, m in a]
    assert kinds.count("stall") == 1 and kinds.count("storage") == 1 and "kill" in kinds
    assert all(0 < t < 30.0 - 2 for t, _ in a)
    assert Chaos.plan({"kill"}, __import__("random").Random(1), 6.0, 100.0) != []
    with pytest.raises(ValueError, match="unknown mode"):
        parse_modes("kill,explode")


# -- the audit catches corruption -----------------------------------------------------------


def _traded(make_system, url):
    """A small database: one profile with a reservation, a released one, a traded signal
    (an open position) and a working LIMIT order; and the acknowledgements for them."""
    system = make_system(url)
    system.create_profile("p1", "10000")
    r1 = system.reserve("p1", "BTCUSDT", "100", "k1")
    r2 = system.reserve("p1", "ETHUSDT", "50", "k2")
    system.release("p1", r2.reservation.reservation_id)
    system.advance(1)
    sig = system.signal("p1", "BTCUSDT", "BUY", system.price("BTCUSDT").last, signal_id="s1",
                        notional="500")
    assert sig["risk_ok"]
    system.advance(1)
    price = system.price("ETHUSDT").last
    system.submit_order("p1", "lim-1", "ETHUSDT", "BUY", "0.01", type="LIMIT",
                        price=str(Decimal(price) / 2))
    acks = [
        {"op": "reserve", "pid": "p1", "key": "k1", "rid": r1.reservation.reservation_id,
         "amount": "100", "symbol": "BTCUSDT", "t": 1.0},
        {"op": "reserve", "pid": "p1", "key": "k2", "rid": r2.reservation.reservation_id,
         "amount": "50", "symbol": "ETHUSDT", "t": 1.1},
        {"op": "release", "pid": "p1", "rid": r2.reservation.reservation_id, "t": 1.2},
        {"op": "signal", "pid": "p1", "sid": "s1", "risk_ok": True,
         "order_id": sig["order_id"], "position_id": sig["position_id"], "t": 1.3},
    ]
    system.stop()
    return acks, sig


def _corrupt(url: str, stmt) -> None:
    from capflow.storage.engine import open_engine

    engine = open_engine(url)
    try:
        with engine.begin() as c:
            c.execute(stmt)
    finally:
        engine.dispose()


def test_the_audit_of_a_clean_database_passes(make_system, sqlite_url):
    acks, _ = _traded(make_system, sqlite_url)
    result = audit_storage(sqlite_url, acks, closes=True)
    assert result.ok, result.violations
    assert result.checked["ledgers"] == 1
    assert result.checked["acknowledged reserve"] == 2
    assert result.checked["order rows"] == 2 and result.checked["position rows"] == 1


CORRUPTIONS = {
    "snapshot": (lambda sig: update(s.ledger_snapshots).values(held=Decimal("100.01")),
                 "held is 100.01 in the snapshot but the rows imply 100"),
    "unreadable money": (lambda sig: text("UPDATE ledger_snapshots SET held = '100.000.01'"),
                         "storage could not be read"),
    "order reserved": (lambda sig: update(s.orders).where(
        s.orders.c.client_order_id == "lim-1").values(reserved=Decimal("1")),
        "reserved_for_orders is"),
    "lost reservation": (lambda sig: delete(s.reservations).where(
        s.reservations.c.client_request_id == "k1"),
        "lost: reservation"),
    "release undone": (lambda sig: update(s.reservations).where(
        s.reservations.c.client_request_id == "k2").values(status="ACTIVE"),
        "lost: release"),
    "lost signal": (lambda sig: delete(s.signals), "lost: signal"),
    "negative fees": (lambda sig: update(s.ledger_snapshots).values(fees=Decimal("-1")),
                      "fees is negative"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_corrupted_storage_row_is_a_violation(make_system, sqlite_url, name):
    acks, sig = _traded(make_system, sqlite_url)
    stmt, expected = CORRUPTIONS[name]
    _corrupt(sqlite_url, stmt(sig))
    result = audit_storage(sqlite_url, acks)
    assert not result.ok
    assert any(expected in v for v in result.violations), result.violations


def test_a_second_order_for_one_signal_is_a_duplicate(make_system, sqlite_url):
    acks, sig = _traded(make_system, sqlite_url)
    from capflow.storage.engine import open_engine

    engine = open_engine(sqlite_url)
    with engine.begin() as c:
        row = dict(c.execute(select(s.orders).where(s.orders.c.order_id == sig["order_id"])
                             ).one()._mapping)
        row.update(order_id="ord_copy", client_order_id=None, status="CANCELED",
                   reserved=Decimal(0))
        c.execute(insert(s.orders).values(**row))
    engine.dispose()
    result = audit_storage(sqlite_url, acks)
    assert any("produced 2 orders" in v for v in result.violations), result.violations


def test_one_key_answered_with_two_ids_is_a_duplicate(make_system, sqlite_url):
    acks, _ = _traded(make_system, sqlite_url)
    first = acks[0]
    acks.append(dict(first, rid=acks[1]["rid"]))  # the same key k1, another reservation
    result = audit_storage(sqlite_url, acks)
    assert any(v.startswith("duplicate: reserve key p1/k1") for v in result.violations), \
        result.violations


def test_an_acknowledged_close_must_be_recorded_then_done(make_system, sqlite_url):
    acks, sig = _traded(make_system, sqlite_url)
    acks.append({"op": "close", "pid": "p1", "position_id": sig["position_id"], "t": 2.0})
    # acknowledged, but nothing recorded on the position: lost, even mid-run
    result = audit_storage(sqlite_url, acks)
    assert any("with no close recorded" in v for v in result.violations), result.violations
    # recorded and not filled yet: fine at a crash point, not at the end
    _corrupt(sqlite_url, update(s.positions).values(close_requested="manual"))
    assert audit_storage(sqlite_url, acks).ok
    result = audit_storage(sqlite_url, acks, closes=True)
    assert any("close was acknowledged but it is OPEN" in v for v in result.violations)


def test_the_wire_audit_sees_a_position_row_that_disagrees_with_the_ledger(
        make_system, sqlite_url):
    """The ledger keeps its fees in the snapshot; the position rows carry them too."""
    from capflow.protocol.server import Server

    _, sig = _traded(make_system, sqlite_url)
    _corrupt(sqlite_url, update(s.positions).where(
        s.positions.c.position_id == sig["position_id"]).values(fees=Decimal("7.77")))
    server = Server(make_system(sqlite_url, server={
        "endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*"})).start()
    try:
        with Client(server.endpoint, timeout_s=5) as c:
            result, ledgers = audit_wire(c, ["p1"])
    finally:
        server.stop()
    assert any("(wire): fees is" in v and "imply 7.77" in v for v in result.violations), \
        result.violations
    assert set(ledgers) == {"p1"}
