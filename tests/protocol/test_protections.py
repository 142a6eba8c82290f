"""Protections through the wire: the cooldown after a close on a symbol (`COOLDOWN`) and
the stop-loss streak lock (`SL_STREAK_LOCK`), met by `signal.submit`, `order.submit` and
`risk.check`, on capflow's clock (a `ManualClock` the tests move), and both still in
force after a restart (derived from the stored closes).

The market is a replayed CSV in step mode, TESTUSDT and OTHERUSDT at 100.00 / 100.20;
at T2 both fall to 97.00 / 97.20, under the stop-losses (2 %: 98.00) of the longs opened
at T1. The paper broker: taker 0.1 %, maker 0.05 %, no slippage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from capflow.actors.config import load_config
from capflow.actors.model.clock import ManualClock
from capflow.actors.model.settings import ConfigError
from capflow.cli_risk import risk_table

from .market import SETTINGS, write_ticks
from .replies import error, ok
from .test_trading_ops import signal

UP = [("TESTUSDT", "100.00", "100.20"), ("OTHERUSDT", "100.00", "100.20"),
      ("THIRDUSDT", "100.00", "100.20")]
DOWN = [("TESTUSDT", "97.00", "97.20"), ("OTHERUSDT", "97.00", "97.20"),
        ("THIRDUSDT", "100.00", "100.20")]
STOPPED = [UP, DOWN, DOWN, DOWN]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def protected(live, raw, tmp_path, storage_url):
    """start(limits) -> (server, raw socket, clock); the same clock and database on
    every start (a restart), SQLite and PostgreSQL."""
    clock = ManualClock(T0)
    replay = write_ticks(tmp_path / "ticks.csv", STOPPED)

    def start(limits):
        server = live(storage_url, clock=clock,
                      simulator={"replay": replay, "symbols": {}},
                      brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                      risk={"limits": limits})
        return server, raw(server.endpoint), clock

    return start


def _stopped_out(server, r, clock, symbols=("TESTUSDT",)) -> None:
    """A long on each of `symbols` opened at T1 and stopped out at T2 (clock +10 s)."""
    for sym in symbols:
        ok(signal(r, symbol=sym, qty="1", sl_pct="2", tp_pct="5"))
    server.system.advance(1)  # T1: the entries fill at 100.20
    clock.advance(10)
    server.system.advance(1)  # T2: the stops 98.00 are hit: exits at the bid 97.00
    closed = ok(r.request("position.list", {"profile_id": "p", "status": "CLOSED"}))
    assert sorted((p["symbol"], p["close_reason"]) for p in closed["positions"]) == sorted(
        (s, "sl") for s in symbols)


def _check(r, symbol="TESTUSDT") -> dict:
    return ok(r.request("risk.check", {"profile_id": "p", "symbol": symbol, "side": "BUY",
                                       "price": "100", "qty": "1"}))


def test_cooldown_after_a_close_denies_entries_on_that_symbol_until_it_ends(protected):
    server, r, clock = protected({"cooldown_s": "60"})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    _stopped_out(server, r, clock)
    closed_at = T0.replace(second=10)
    until = "2026-01-05T12:01:10.000000+00:00"

    clock.advance(15)  # 25 s after the start, 15 s after the close: 45 s left
    res = ok(signal(r, qty="1", price="97"))
    assert (res["risk_ok"], res["risk_reason"], res["order_id"]) == (False, "COOLDOWN", None)
    d = res["risk_details"]
    assert (d["reason"], d["check"], d["limit"], d["value"], d["until"],
            d["retry_after_s"]) == ("COOLDOWN", "cooldown", "60", "15", until, "45")
    details = error(r.request("order.submit", {
        "profile_id": "p", "client_order_id": "o1", "symbol": "TESTUSDT", "side": "BUY",
        "type": "LIMIT", "qty": "1", "price": "100"}), "RISK_REJECTED")
    assert (details["reason"], details["until"], details["retry_after_s"]) == (
        "COOLDOWN", until, "45")
    check = _check(r)
    assert (check["allowed"], check["reason"]) == (False, "COOLDOWN")
    row = next(c for c in check["checks"] if c["check"] == "cooldown")
    assert (row["ok"], row["headroom"], row["until"]) == (False, "-45", until)
    table = risk_table(check)  # `capflow call risk.check`
    assert f"cooldown: entries wait until {until} (-45 s of headroom)" in table
    assert table.endswith("a signal would be refused with COOLDOWN")
    # another symbol is not cooling down
    assert ok(signal(r, symbol="THIRDUSDT", qty="1"))["risk_ok"] is True

    # a restart: the cooldown comes back from the stored close
    server.stop()
    server.system.stop()
    server, r, _ = protected({"cooldown_s": "60"})
    res = ok(signal(r, qty="1", price="97"))
    assert (res["risk_reason"], res["risk_details"]["until"]) == ("COOLDOWN", until)

    clock.set(closed_at.replace(minute=1))  # 60 s after the close: over
    assert ok(signal(r, qty="1"))["risk_ok"] is True
    assert _check(r)["allowed"] is True


def test_cooldown_after_sl_only_ignores_other_closes(protected):
    server, r, _ = protected({"cooldown_s": "60", "cooldown_after": "sl"})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    third = ok(signal(r, symbol="THIRDUSDT", qty="1"))
    ok(signal(r, qty="1", sl_pct="2", tp_pct="5"))
    server.system.advance(1)  # T1: both fill
    ok(r.request("position.close", {"profile_id": "p", "position_id": third["position_id"]}))
    server.system.advance(1)  # T2: THIRDUSDT closed by hand, TESTUSDT stopped out
    closed = ok(r.request("position.list", {"profile_id": "p", "status": "CLOSED"}))
    assert sorted((p["symbol"], p["close_reason"]) for p in closed["positions"]) == [
        ("TESTUSDT", "sl"), ("THIRDUSDT", "manual")]
    assert ok(signal(r, symbol="THIRDUSDT", qty="1"))["risk_ok"] is True
    assert ok(signal(r, qty="1", price="97"))["risk_reason"] == "COOLDOWN"


def test_sl_streak_locks_the_profile_and_survives_a_restart(protected):
    limits = {"sl_streak_count": 2, "sl_streak_window_s": "3600", "sl_streak_lock_s": "600"}
    server, r, clock = protected(limits)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    _stopped_out(server, r, clock, ("TESTUSDT", "OTHERUSDT"))
    until = "2026-01-05T12:10:10.000000+00:00"  # 600 s after the second stop-loss

    clock.advance(100)
    res = ok(signal(r, symbol="THIRDUSDT", qty="1"))  # any symbol: the profile is locked
    assert (res["risk_ok"], res["risk_reason"]) == (False, "SL_STREAK_LOCK")
    d = res["risk_details"]
    assert (d["check"], d["limit"], d["value"], d["until"], d["retry_after_s"]) == (
        "sl_streak", 2, 2, until, "500")
    row = next(c for c in _check(r, "THIRDUSDT")["checks"] if c["check"] == "sl_streak")
    assert (row["ok"], row["code"], row["until"]) == (False, "SL_STREAK_LOCK", until)

    server.stop()
    server.system.stop()
    server, r, _ = protected(limits)
    assert ok(signal(r, symbol="THIRDUSDT", qty="1"))["risk_reason"] == "SL_STREAK_LOCK"
    clock.advance(500)  # the lock has ended
    assert ok(signal(r, symbol="THIRDUSDT", qty="1"))["risk_ok"] is True


def test_sl_streak_per_symbol_locks_only_that_symbol(protected):
    limits = {"sl_streak_count": 1, "sl_streak_window_s": "3600", "sl_streak_lock_s": "600",
              "sl_streak_scope": "symbol"}
    server, r, clock = protected(limits)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    _stopped_out(server, r, clock)
    assert ok(signal(r, qty="1"))["risk_reason"] == "SL_STREAK_LOCK"
    assert ok(signal(r, symbol="THIRDUSDT", qty="1"))["risk_ok"] is True


def test_protection_settings_are_checked_at_load():
    good = {"cooldown_s": "30", "cooldown_after": "sl", "sl_streak_count": 3,
            "sl_streak_window_s": "3600", "sl_streak_lock_s": "900",
            "sl_streak_scope": "symbol", "sizing": "shrink", "min_qty": "0.001"}
    limits = load_config(env={}, risk={"limits": good}).risk.limits
    assert (limits.cooldown_s, limits.sl_streak_scope, limits.sizing) == (
        Decimal(30), "symbol", "shrink")
    for bad, says in (({"cooldown_s": "0"}, "cooldown_s must be a number greater than 0"),
                      ({"cooldown_after": "tp"}, "cooldown_after must be one of"),
                      ({"sl_streak_count": 2}, "sl_streak_count needs sl_streak_window_s"),
                      ({"sl_streak_count": 0, "sl_streak_window_s": "1",
                        "sl_streak_lock_s": "1"}, "sl_streak_count must be in 1..100"),
                      ({"sl_streak_scope": "account"}, "sl_streak_scope must be one of"),
                      ({"sizing": "maybe"}, "sizing must be one of")):
        with pytest.raises(ConfigError, match=says):
            load_config(env={}, risk={"limits": bad})
