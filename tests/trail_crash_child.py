"""Child process for tests/test_trail_crash.py: a System in step mode replaying a price
path, opening one long with a trailing stop (``open``) or resuming after a crash
(``resume``); each line on stdin advances the market one tick, and the position is
printed once that tick's bookings are committed. The parent SIGKILLs it mid-path."""

from __future__ import annotations

import json
import sys

from capflow.actors.config import load_config
from capflow.actors.system import System

SETTINGS = {"taker_fee": "0.001", "maker_fee": "0.0005", "slippage_bps": "0"}


def main(url: str, replay: str, audit: str, mode: str) -> None:
    cfg = load_config(env={}, storage={"url": url},
                      simulator={"mode": "step", "replay": replay, "symbols": {}},
                      brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                      oms={"audit_log": audit})
    system = System(cfg).start()
    if mode == "open":
        system.create_profile("p", "10000")
        system.advance(1)
        system.submit_order("p", "trail", "TESTUSDT", "BUY", "1", trail_amount="1.50",
                            trail_activation="101.00")
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        system.advance(1)
        positions, _ = system.trading.list_positions("p")
        out = [{"status": p.status, "best": p.trail_best, "stop": p.trail_stop,
                "reason": p.close_reason, "exit_price": p.exit_price} for p in positions]
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
