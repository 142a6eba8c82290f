"""A kill switch that acts survives a SIGKILL: the states (a profile's, an account's),
the breakers and the cancellations hold after a restart, also a cancel the crash cut
off (the restored order is canceled at start)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from capflow.actors.system import System

from .safety_crash_child import config

ROOT = Path(__file__).resolve().parent.parent


def test_states_breakers_and_cancels_survive_a_sigkill(tmp_path):
    url = f"sqlite:///{tmp_path}/safety.db"
    replay, audit = str(tmp_path / "ticks.csv"), str(tmp_path / "signals.jsonl")
    child = subprocess.Popen([sys.executable, "-m", "tests.safety_crash_child", url, replay,
                              audit], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    cf = System(config(url, replay, audit)).start()
    try:
        safety = cf.trading.safety
        # states
        assert cf.ledger("hand").state == "HALTED"
        acct = safety.account_state("acct2")
        assert (acct.state, acct.changed_by) == ("HALTED", "account-risk")
        assert acct.reason.startswith("DAILY_LOSS_LIMIT")
        # the cancel the crash cut off is done at start: hand's resting order never fills
        cf.advance(8)  # the replay again, down to 89
        [dip] = [o for o in cf.trading.list_orders("hand")[0] if o.client_order_id == "dip"]
        assert dip.status == "CANCELED"
        assert cf.trading.list_positions("hand")[0] == []
        for pid in ("x1", "x2"):
            [dip] = [o for o in cf.trading.list_orders(pid)[0] if o.client_order_id == "dip"]
            assert dip.status == "CANCELED"
            assert cf.signal(pid, "TESTUSDT", "BUY", "89.02", qty="1")["risk_reason"] == (
                "TRADING_HALTED")
        # the breaker is still tripped
        assert cf.signal("brk", "TESTUSDT", "BUY", "89.02",
                         qty="1")["risk_reason"] == "DRAWDOWN_DAILY"
        reasons = safety.reasons()
        assert any(r.startswith("account acct2 is HALTED") for r in reasons), reasons
        assert any("brk" in r and "DRAWDOWN_DAILY" in r for r in reasons), reasons
    finally:
        cf.stop()
