"""A trailing stop across a SIGKILL: a process replaying the price path of
tests/fixtures/trail_path.csv is killed mid-path, a new one continues the path on the
same storage, and the stop levels tick by tick, the one trigger and the one close are
those of an uninterrupted run (tests/protocol/test_trailing_ops.py has the table)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, select

from capflow.storage import schema as s

from .protocol.test_trailing_ops import EXIT_PRICE, EXPECTED, LAST_STOP, TRIGGER_TICK

ROOT = Path(__file__).resolve().parent.parent
PATH = Path(__file__).parent / "fixtures" / "trail_path.csv"
#: the ticks the first process sees before it is killed (tick 1: the order; 2: its fill)
KILL_AFTER = 12


def _child(url: str, replay: Path, audit: Path, mode: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-m", "tests.trail_crash_child", url,
                              str(replay), str(audit), mode], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, bufsize=1)
    assert json.loads(child.stdout.readline()) == {"ready": True}
    return child


def _tick(child: subprocess.Popen) -> list[dict]:
    child.stdin.write("tick\n")
    child.stdin.flush()
    return json.loads(child.stdout.readline())


def test_a_trailing_stop_resumes_after_sigkill_with_the_same_levels(tmp_path):
    url = f"sqlite:///{tmp_path}/trail.db"
    lines = PATH.read_text().splitlines()
    seen: dict[int, list[dict]] = {}
    first = _child(url, PATH, tmp_path / "a.jsonl", "open")
    try:
        for tick in range(2, KILL_AFTER + 1):
            seen[tick] = _tick(first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL

    # the rest of the path, from the tick after the last one the first process saw
    rest = tmp_path / "rest.csv"
    rest.write_text("\n".join([lines[0], *lines[KILL_AFTER + 1:]]) + "\n")
    second = _child(url, rest, tmp_path / "b.jsonl", "resume")
    try:
        for tick in range(KILL_AFTER + 1, len(lines)):
            seen[tick] = _tick(second)
        second.stdin.close()
        second.wait(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()

    for tick, _bid, stop in EXPECTED:
        (p,) = seen[tick]
        assert (p["status"], p["stop"]) == ("OPEN", stop), tick
    for tick in range(TRIGGER_TICK, len(lines)):
        (p,) = seen[tick]
        assert (p["status"], p["reason"], p["exit_price"], p["stop"]) == (
            "CLOSED", "trail", EXIT_PRICE, LAST_STOP), tick
    engine = create_engine(url)
    with engine.connect() as c:
        exits = c.execute(select(s.fills).where(s.fills.c.kind == "EXIT")).all()
        positions = c.execute(select(s.positions)).all()
    engine.dispose()
    assert [(str(f.price), str(f.qty)) for f in exits] == [(EXIT_PRICE, "1")]
    assert [(p.status, p.close_reason) for p in positions] == [("CLOSED", "trail")]
