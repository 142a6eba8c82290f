"""A journal written by an earlier capflow loads and rebuilds with today's code.

tests/fixtures/journal_v1/capflow.db was written by tests/fixtures/journal_v1/make.py
with the code of its commit, and expected.json is what that code read back from it.
Today's code must read back the same, then keep trading on it.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from capflow import System
from capflow.actors.model.clock import ManualClock

from ..fixtures.journal_v1.make import config, read_back

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "journal_v1"
#: order fields added since the fixture was written, as its orders read back: no trigger,
#: GTC, no expiry, no end reason stated, no trailing stop
_NO_TRAIL = {"trail_amount": None, "trail_pct": None, "trail_activation": None}
ADDED_ORDER_FIELDS = {"trigger_price": None, "time_in_force": "GTC", "expire_at": None,
                      "end_reason": None, "triggered_at": None, **_NO_TRAIL}
#: and position fields: no trailing stop
ADDED_POSITION_FIELDS = {**_NO_TRAIL, "trail_best": None, "trail_stop": None}


def _without_added(read: dict) -> dict:
    for pid, view in read.items():
        if not isinstance(view, dict) or "orders" not in view:
            continue
        for order in view["orders"]:
            added = {f: order.pop(f) for f in ADDED_ORDER_FIELDS}
            assert added == ADDED_ORDER_FIELDS, (pid, order["order_id"], added)
        for position in view.get("positions", ()):
            added = {f: position.pop(f) for f in ADDED_POSITION_FIELDS}
            assert added == ADDED_POSITION_FIELDS, (pid, position["position_id"], added)
    return read


def test_an_earlier_journal_reads_back_as_it_was_written_and_trades_on(tmp_path):
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    shutil.copy(FIXTURE / "capflow.db", tmp_path / "capflow.db")
    profiles = expected.pop("profiles")
    start = datetime.fromisoformat(expected.pop("start"))
    clock = ManualClock(start + timedelta(seconds=30))
    with System(config(tmp_path), clock=clock) as cf:
        assert _without_added(read_back(cf, profiles)) == expected
        answer = cf.signal("beta", "BTCUSDT", "BUY", "65000", qty="0.001",
                           signal_id="after-1")
        assert answer["risk_ok"] is True, answer
        clock.advance(1)
        cf.advance(1)
        opened, _ = cf.trading.list_positions("beta", status="OPEN")
        assert {p.symbol for p in opened} == {"ETHUSDT", "BTCUSDT"}
        assert all(cf.audit(pid).ok for pid in profiles)
    # and once more from what this run stored
    with System(config(tmp_path), clock=clock) as cf:
        assert all(cf.audit(pid).ok for pid in profiles)
        assert len(cf.trading.list_positions("beta", status="OPEN")[0]) == 2
