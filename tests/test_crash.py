"""Crash safety: a process making acknowledged mutations is SIGKILLed mid-stream, twice;
after restart every acknowledged mutation is in storage and every ledger equals its
rebuild from rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from capflow.storage import schema as s

from .crash_child import PROFILES

ROOT = Path(__file__).resolve().parent.parent


def _run_and_kill(url: str, run: str, acks_before_kill: int, *extra: str,
                  child_module: str = "tests.crash_child") -> list[dict]:
    child = subprocess.Popen([sys.executable, "-m", child_module, url, run, *extra],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, bufsize=1)
    acks: list[dict] = []
    deadline = time.monotonic() + 60
    try:
        for line in child.stdout:
            msg = json.loads(line)
            if msg["op"] != "ready":
                acks.append(msg)
            if len(acks) >= acks_before_kill or time.monotonic() > deadline:
                break
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: writes are in flight
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    acks += [json.loads(x) for x in rest.splitlines() if x.strip()]
    assert child.returncode == -signal.SIGKILL
    return acks


def test_sigkill_loses_no_acknowledged_mutation(tmp_path, make_system):
    url = f"sqlite:///{tmp_path}/crash.db"
    acks = _run_and_kill(url, "r1", 400)
    acks += _run_and_kill(url, "r2", 400)  # the second run recovers from the first crash
    assert len(acks) >= 800

    system = make_system(url)
    with system.engine.connect() as c:
        reservations = {r.reservation_id: r for r in c.execute(select(s.reservations))}
        transfers = {(r.profile_id, r.client_request_id): r.amount
                     for r in c.execute(select(s.transfers))}
    released = {a["rid"] for a in acks if a["op"] == "release"}
    for a in acks:
        if a["op"] == "reserve":
            row = reservations.get(a["rid"])
            assert row is not None, f"acknowledged reservation lost: {a}"
            assert (row.profile_id, row.client_request_id, row.amount) == (
                a["pid"], a["key"], Decimal(a["amount"]))
            if a["rid"] in released:
                assert row.status == "RELEASED"
        elif a["op"] == "release":
            assert reservations[a["rid"]].status == "RELEASED", a
        else:
            sign = 1 if a["op"] == "deposit" else -1
            assert transfers.get((a["pid"], a["key"])) == sign * Decimal(a["amount"]), a

    assert system.store.snapshots() == system.store.rebuild()
    for pid in PROFILES:
        view = system.get_profile(pid)
        assert view.profile.state == "ACTIVE", view.profile.state_reason
        report = system.audit(pid)
        assert report.ok, report.violations


def test_sigkill_while_trading_loses_no_order_and_open_positions_still_close(tmp_path,
                                                                           make_system):
    from .oms_crash_child import MARKET
    from .oms_crash_child import PROFILES as OMS_PROFILES

    url = f"sqlite:///{tmp_path}/oms.db"
    audit = str(tmp_path / "signals.jsonl")
    acks = _run_and_kill(url, "r1", 150, audit, child_module="tests.oms_crash_child")
    acks += _run_and_kill(url, "r2", 150, audit, child_module="tests.oms_crash_child")
    traded = [a for a in acks if a["ok"]]
    assert len(traded) >= 250

    system = make_system(url, simulator=MARKET)
    with system.engine.connect() as c:
        orders = {r.order_id: r for r in c.execute(select(s.orders))}
        signals = {(r.profile_id, r.signal_id) for r in c.execute(select(s.signals))}
    for a in traded:
        assert (a["pid"], a["sid"]) in signals, f"acknowledged signal lost: {a}"
        assert a["order"] in orders, f"acknowledged order lost: {a}"
    assert system.store.snapshots() == system.store.rebuild()
    for pid in OMS_PROFILES:
        assert system.audit(pid).ok, system.audit(pid).violations
    # every order the crash left working is filled and every position still closes
    for _ in range(200):
        system.advance(5)
        open_now = [p for pid in OMS_PROFILES
                    for p in system.trading.list_positions(pid, status="OPEN",
                                                           limit=1000)[0]]
        working = [o for pid in OMS_PROFILES
                   for o in system.trading.list_orders(pid, status="OPEN", limit=1000)[0]]
        if not open_now and not working:
            break
    assert not open_now and not working, (len(open_now), len(working))
    with system.engine.connect() as c:
        reasons = {r.close_reason for r in c.execute(select(s.positions))}
    assert reasons <= {"tp", "sl"} and reasons
    for pid in OMS_PROFILES:
        led = system.ledger(pid)
        assert led.reserved_for_orders == 0 and led.reserved_for_positions == 0
        assert system.audit(pid).ok
