"""Child process for tests/test_crash.py: trades (signals, ticks, fills, exits) until
killed. A line is printed only after its signal was answered, i.e. after the commit of
its order; the parent treats every printed signal as acknowledged."""

from __future__ import annotations

import json
import sys
import threading

from capflow.actors.config import load_config
from capflow.actors.system import System

PROFILES = ("oms-a", "oms-b")
#: a volatile market (about 0.3 % per tick) so that stops of 0.4 % fire within ticks
MARKET = {"mode": "step", "dt_s": 60.0, "seed": 5,
          "symbols": {"BTCUSDT": {"price": "65000", "volatility": 2.0, "liquidity": "50"}}}


def config(url: str, audit: str):
    return load_config(env={}, storage={"url": url}, simulator=MARKET,
                       oms={"audit_log": audit})


def main(url: str, run: str, audit: str) -> None:
    system = System(config(url, audit)).start()
    for pid in PROFILES:
        system.create_profile(pid, "100000")
    lock = threading.Lock()

    def say(**fields) -> None:
        with lock:
            sys.stdout.write(json.dumps(fields, default=str) + "\n")
            sys.stdout.flush()

    say(op="ready")

    def ticker() -> None:
        while True:
            system.trading.sim.advance(1).get(timeout=30)

    def trader(n: int) -> None:
        i = 0
        while True:
            i += 1
            pid = PROFILES[(n + i) % len(PROFILES)]
            sid = f"{run}-{n}-{i}"
            side = "BUY" if i % 2 else "SELL"
            price = system.trading.board["BTCUSDT"].ask
            r = system.signal(pid, "BTCUSDT", side, str(price), qty="0.01", tp_pct="0.4",
                              sl_pct="0.4", signal_id=sid)
            say(op="signal", pid=pid, sid=sid, ok=r["risk_ok"], order=r["order_id"],
                position=r["position_id"])

    system.advance(1)
    threading.Thread(target=ticker, daemon=True).start()
    for n in range(4):
        threading.Thread(target=trader, args=(n,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
