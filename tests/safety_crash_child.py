"""Child process for tests/test_safety_crash.py: brings a kill switch into every state it
keeps -- a profile halted by hand (its cancel cut off, as a crash between the two would),
a breaker tripped by a tick, an account halted by its loss limit -- prints ``ready`` and
waits to be killed."""

from __future__ import annotations

import sys
import threading

from capflow.actors.config import load_config
from capflow.actors.system import System

SETTINGS = {"taker_fee": "0.001", "maker_fee": "0.0005", "slippage_bps": "0"}
T = "TESTUSDT"
#: 1-2 at 100, 3-4 at 94, 5-8 at 89 (below every resting limit at 90)
STEPS = [("100.00", "100.02")] * 2 + [("94.00", "94.02")] * 2 + [("89.00", "89.02")] * 4


def write_path(path: str) -> str:
    lines = ["ts,symbol,bid,ask,liquidity"]
    for i, (bid, ask) in enumerate(STEPS, start=1):
        lines.append(f"2026-01-05T12:00:{i:02d}+00:00,{T},{bid},{ask},1000")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def config(url: str, replay: str, audit: str):
    paper = {"settings": SETTINGS}
    return load_config(
        env={}, storage={"url": url}, oms={"audit_log": audit},
        allocation={"max_ticker": "1"},
        simulator={"mode": "step", "replay": replay, "symbols": {}},
        brokers={"accounts": {"paper": paper, "acct2": paper}},
        risk={"mark_interval_s": 0,
              "overrides": {"brk": {"daily_loss_limit_pct": "1"}},
              "accounts": {"acct2": {"daily_loss_limit": "100"}}})


def main(url: str, replay: str, audit: str) -> None:
    cf = System(config(url, write_path(replay), audit)).start()
    cf.create_profile("hand", "2000")
    cf.create_profile("brk", "10000")
    for pid in ("x1", "x2"):
        cf.create_profile(pid, "2000", account_id="acct2")
    cf.advance(1)
    for pid in ("brk", "x1", "x2"):
        qty = "50" if pid == "brk" else "10"
        cf.submit_order(pid, "in", T, "BUY", qty, type="LIMIT", price="100.02")
    for pid in ("hand", "x1", "x2"):
        cf.submit_order(pid, "dip", T, "BUY", "1", type="LIMIT", price="90")
    cf.advance(1)  # 2: the entries fill at 100.02
    # the halt is stored, and the process dies before its cancel reaches the broker
    cf.trading.safety._cancel = lambda *args: None
    cf.set_state("hand", "HALTED", "desk says stop", "ops")
    cf.advance(1)  # 3: 94: brk's breaker trips, acct2's two profiles lose 121.22 together
    assert cf.signal("brk", T, "BUY", "94.02", qty="1")["risk_reason"] == "DRAWDOWN_DAILY"
    assert cf.trading.safety.account_state("acct2").state == "HALTED"
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
