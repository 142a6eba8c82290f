"""Drawdown breakers end to end, with an injected clock and a replayed market: a loss
that trips the daily limit blocks entries until the next UTC day, exits still go
through, and the trip survives a restart.

Fees: taker 0.1 %, no slippage. The `atlas` risk profile: daily loss limit 1 %, max
drawdown 5 %, 2 % risk per trade.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from capflow.actors.system import System

from .test_trading import SETTINGS, step, write_ticks

PATH = [
    ("99.98", "100.02"),  # T1: A and B fill at the ask 100.02
    ("93.98", "94.02"),   # T2: marked at 94.00 (the mid): 6.02 under the entry
    ("93.98", "94.02"),   # T3: A closed by hand at the bid 93.98
    ("93.98", "94.02"),
]


def _start(make_system, url, clock, replay) -> System:
    return make_system(url, clock=clock, simulator={"replay": replay, "symbols": {}},
                       brokers={"accounts": {"paper": {"settings": SETTINGS}}})


def _buy(cf, sid, qty="10"):
    # stop 10 % under: 10 * 10 = 100 at risk, 1 % of equity (atlas allows 2 %)
    return cf.signal("p", "TESTUSDT", "BUY", "100", qty=qty, sl_pct="10", tp_pct="50",
                     signal_id=sid)


def test_daily_breaker_blocks_entries_until_the_next_utc_day_and_survives_a_restart(
        make_system, sqlite_url, tmp_path, clock):
    replay = write_ticks(tmp_path / "ticks.csv", PATH)
    cf = _start(make_system, sqlite_url, clock, replay)
    cf.create_profile("p", "10000", risk_profile="atlas")
    events = []
    cf.bus.subscribe(lambda batch: events.extend(batch))

    assert _buy(cf, "A")["risk_ok"] and _buy(cf, "B")["risk_ok"]
    step(cf, clock)  # T1: both fill 10 @ 100.02 = 1000.20, fee 1.0002 -> 1.01 each (rounded up)
    step(cf, clock)  # T2: the market falls to 94.00
    # equity = 10,000 - 2.02 fees + 2 * (940.00 - 1000.20) = 9,877.58: a loss of
    # 1.2242 % of the day's baseline (10,000, first seen when A was checked) >= 1 %
    view = cf.get_profile("p").risk
    assert view["equity"] == D("9877.58")
    denied = _buy(cf, "C")
    assert (denied["risk_ok"], denied["risk_reason"]) == (False, "DRAWDOWN_DAILY")
    trips = [e for e in events if type(e).__name__ == "BreakerTripped"]
    assert len(trips) == 1 and trips[0].trip.code == "DRAWDOWN_DAILY"
    assert (trips[0].trip.loss_pct, trips[0].trip.reference) == (D("1.2242"), D("10000.00"))
    assert trips[0].trip.until == datetime(2026, 1, 6, tzinfo=UTC)
    daily = cf.get_profile("p").risk["breakers"]["daily"]
    assert daily["tripped"] and daily["limit_pct"] == 1

    # exits still go through: close A by hand, it fills at the next tick
    a = next(p for p in cf.trading.list_positions("p", status="OPEN")[0]
             if p.order_id == _buy(cf, "A")["order_id"])
    cf.trading.close_position("p", a.position_id)
    step(cf, clock)  # T3: A exits at 93.98: 939.80 - 1000.20 = -60.40, fee 0.94
    closed = cf.trading.list_positions("p", status="CLOSED")[0]
    assert [(p.position_id, p.close_reason) for p in closed] == [(a.position_id, "manual")]
    assert cf.ledger("p").realized_pnl == D("-60.40")
    # the loss recovering (or not) changes nothing today
    assert _buy(cf, "D")["risk_reason"] == "DRAWDOWN_DAILY"

    # a restart: the trip was committed with the ledger, so it is still there
    cf.stop()
    cf = _start(make_system, sqlite_url, clock, replay)
    assert cf.get_profile("p").risk["breakers"]["daily"]["tripped"]
    assert _buy(cf, "E")["risk_reason"] == "DRAWDOWN_DAILY"
    assert _buy(cf, "E")["reused"]  # the refusal was recorded, and answers repeats

    # one second before midnight: still blocked; at midnight UTC the period ends
    clock.set(datetime(2026, 1, 5, 23, 59, 59, tzinfo=UTC))
    assert _buy(cf, "F")["risk_reason"] == "DRAWDOWN_DAILY"
    # at midnight the profile's actor wakes up by itself: the period ends, the breaker
    # resets (an event) before any entry looks
    cf.bus.subscribe(lambda batch: events.extend(batch))
    clock.set(datetime(2026, 1, 6, 0, 0, 1, tzinfo=UTC))
    assert cf.run_timers() == 1
    cf.ledger("p")  # answered after the wake-up it queued behind
    resets = [e for e in events if type(e).__name__ == "BreakerReset"]
    assert [(e.trip.code, e.reset_by) for e in resets] == [("DRAWDOWN_DAILY", "period")]
    g = _buy(cf, "G")
    assert (g["risk_ok"], g["risk_reason"]) == (True, None)
    breakers = cf.get_profile("p").risk["breakers"]
    assert not breakers["daily"]["tripped"]


def test_max_drawdown_stays_tripped_across_days_until_reset_by_hand(
        make_system, sqlite_url, tmp_path, clock):
    path = [("99.98", "100.02"), ("39.98", "40.02")] + [("39.98", "40.02")] * 3
    replay = write_ticks(tmp_path / "ticks.csv", path)
    cf = _start(make_system, sqlite_url, clock, replay)
    cf.create_profile("p", "10000", risk_profile="atlas")
    # no stop given: the stop defaults to [oms] sl_pct (1 %): 10 * 1 = 10 at risk
    assert cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", signal_id="A")["risk_ok"]
    step(cf, clock)  # fills 10 at the ask 100.02 = 1000.20
    step(cf, clock)  # the stop at 99.00 is gapped: exits at the bid 39.98, over 5 %
    assert cf.ledger("p").realized_pnl == D("-600.40")  # 399.80 - 1000.20
    assert cf.signal("p", "TESTUSDT", "BUY", "40", qty="1", signal_id="B")[
        "risk_reason"] in ("DRAWDOWN_DAILY", "MAX_DRAWDOWN")
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))  # weeks later: the daily one is over
    assert cf.signal("p", "TESTUSDT", "BUY", "40", qty="1", signal_id="C")[
        "risk_reason"] == "MAX_DRAWDOWN"
    reset = cf.reset_breakers("p", ["max"], reason="reviewed", changed_by="ops")
    assert [t.code for t in reset] == ["MAX_DRAWDOWN"]
    assert cf.signal("p", "TESTUSDT", "BUY", "40", qty="1", signal_id="D")["risk_ok"]
