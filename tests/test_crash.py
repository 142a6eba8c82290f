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

from storage import schema as s
from tests.crash_child import PROFILES

ROOT = Path(__file__).resolve().parent.parent


def _run_and_kill(url: str, run: str, acks_before_kill: int) -> list[dict]:
    child = subprocess.Popen([sys.executable, "-m", "tests.crash_child", url, run],
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
