"""The trading ops through the wire: raw msgpack frames on a DEALER socket, a real server
over a real System, the market replayed from a CSV and moved one step at a time
(``server.system.advance``). Every amount below is computed by hand in a comment.

Fees in these tests (the paper broker's settings): taker 0.1 %, maker 0.05 %, no
slippage. A MARKET order reserves qty * price * (1 + 1 %) * (1 + 0.1 %), rounded up to
the cent; a LIMIT order qty * limit * (1 + 0.05 %).
"""

from __future__ import annotations

import time
from decimal import Decimal as D

import msgpack
import pytest
import zmq

from .market import SETTINGS
from .replies import error, ok

SIGNAL_KEYS = {"received", "oms_enabled", "risk_ok", "risk_reason", "order_id",
               "position_id", "tp_price", "sl_price", "reused"}
TS = "2026-01-05T11:59:00+00:00"


def signal(r, profile_id="p", symbol="TESTUSDT", side="BUY", price="100", **optional):
    return r.request("signal.submit", {"profile_id": profile_id, "symbol": symbol,
                                       "side": side, "price": price, "timestamp": TS,
                                       **optional})


def ledger(r, profile_id="p") -> dict:
    return ok(r.request("ledger.get", {"profile_id": profile_id}))


# -- signal.submit ------------------------------------------------------------------------

def test_signal_answer_has_the_contract_keys_and_repeats_by_signal_id(market):
    _server, r = market()
    health = ok(r.request("system.health"))
    assert (health["oms_enabled"], health["broker_mode"]) == (True, "paper")
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))

    # BUY ("long") 10 @ 100, tp 5 % -> 105.00, sl 2 % -> 98.00;
    # reserves 10 * 100 * 1.01 * 1.001 = 1011.01
    args = {"side": "long", "qty": "10", "tp_pct": "5", "sl_pct": "2", "signal_id": "A",
            "strategy": "trend", "exchange": "sim", "timeframe_min": 15}
    a = ok(signal(r, **args))
    assert set(a) >= SIGNAL_KEYS
    assert (a["received"], a["oms_enabled"], a["risk_ok"], a["risk_reason"], a["reused"]) == (
        True, True, True, None, False)
    assert (a["tp_price"], a["sl_price"], a["qty"]) == ("105.00", "98.00", "10")
    assert isinstance(a["order_id"], str) and isinstance(a["position_id"], str)
    assert ledger(r)["reserved_for_orders"] == "1011.01"
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": a["order_id"]}))
    assert (order["side"], order["type"], order["status"], order["signal_id"],
            order["strategy"], order["exchange"], order["position_id"]) == (
        "BUY", "MARKET", "OPEN", "A", "trend", "sim", a["position_id"])

    # the same signal_id with the same content: the first answer, nothing new reserved
    again = ok(signal(r, **args))
    assert again["reused"] is True
    assert {k: again[k] for k in again if k not in ("reused", "note")} == {
        k: a[k] for k in a if k not in ("reused", "note")}
    # its note says it is the first answer replayed, not what is true now
    assert again["note"].startswith("a repeat of signal A: its first answer, of 20")
    assert again["note"].endswith(f" UTC, unchanged ({a['note']}); order.get and "
                                  "position.list say what is true now")
    assert ledger(r)["reserved_for_orders"] == "1011.01"
    assert len(ok(r.request("order.list", {"profile_id": "p"}))["orders"]) == 1

    # the same signal_id with other content
    details = error(signal(r, **{**args, "qty": "11"}), "CONFLICT")
    assert details["signal_id"] == "A"

    # "short" is a SELL: tp 4 % below -> 96.00, sl 2 % above -> 102.00
    s = ok(signal(r, side="short", qty="1", tp_pct="4", sl_pct="2", signal_id="B"))
    assert (s["risk_ok"], s["tp_price"], s["sl_price"]) == (True, "96.00", "102.00")
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": s["order_id"]}))
    assert order["side"] == "SELL"


def test_malformed_signals_are_invalid_argument_and_change_nothing(market):
    _server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    cases = [
        ({"price": "abc"}, "price"),
        ({"price": "0"}, "price"),
        ({"price": float("nan")}, "price"),
        ({"qty": "-1"}, "qty"),
        ({"qty": "0.0000001"}, "qty"),  # TESTUSDT has 6 quantity places
        ({"notional": "-5"}, "notional"),
        ({"qty": "1", "notional": "100"}, "qty"),
        ({"bogus": 1}, "bogus"),
        ({"side": "up"}, "side"),
        ({"tp_pct": "abc"}, "tp_pct"),
        ({"sl_pct": "100"}, "sl_pct"),
        ({"timeframe_min": -1}, "timeframe_min"),
        ({"symbol": ""}, "symbol"),
    ]
    for extra, field in cases:
        details = error(signal(r, **extra), "INVALID_ARGUMENT")
        assert details["field"] == field, (extra, details)
    details = error(r.request("signal.submit", {"profile_id": "p", "symbol": "TESTUSDT",
                                                "side": "BUY", "price": "100"}),
                    "INVALID_ARGUMENT")
    assert details["field"] == "timestamp"
    led = ledger(r)
    assert (led["reserved_for_orders"], led["available"]) == ("0.00", "10000.00")
    assert ok(r.request("order.list", {"profile_id": "p"}))["orders"] == []


def test_denied_signals_are_answered_with_a_risk_reason(market):
    _server, r = market()
    details = error(signal(r, profile_id="ghost", qty="1"), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("profile", "ghost")
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))

    def denied(reply: dict, reason: str) -> dict:
        res = ok(reply)
        assert set(res) >= SIGNAL_KEYS
        assert (res["received"], res["oms_enabled"], res["risk_ok"], res["risk_reason"]) == (
            True, True, False, reason), res
        assert (res["order_id"], res["position_id"], res["tp_price"], res["sl_price"]) == (
            None, None, None, None)
        return res

    # 1000 @ 100 reserves about 101101: far above the 10000 available
    first = denied(signal(r, qty="1000", signal_id="big"), "INSUFFICIENT_CAPITAL")
    assert first["reused"] is False
    # the decision is recorded with the signal_id: a repeat gets it again
    assert denied(signal(r, qty="1000", signal_id="big"), "INSUFFICIENT_CAPITAL")["reused"]
    # notional 0.0000001 / 100 rounds down to 0 at 6 quantity places
    denied(signal(r, notional="0.0000001"), "MIN_NOTIONAL")
    ok(r.request("profile.set_state", {"profile_id": "p", "state": "HALTED"}))
    denied(signal(r, qty="1"), "TRADING_HALTED")
    ok(r.request("profile.set_state", {"profile_id": "p", "state": "REDUCE_ONLY"}))
    denied(signal(r, qty="1"), "REDUCE_ONLY")

    led = ledger(r)
    assert (led["reserved_for_orders"], led["available"]) == ("0.00", "10000.00")
    assert ok(r.request("order.list", {"profile_id": "p"}))["orders"] == []


def test_signal_sizing_from_notional_and_from_risk_per_trade(market):
    _server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))

    # risk per trade (default 1 % of equity 10000 = 100) at the stop: sl 2 % of 100 ->
    # 98.00, stop distance 2 -> qty 100 / 2 = 50; tp defaults to 2 % -> 102.00;
    # reserves 50 * 100 * 1.01 * 1.001 = 5055.05
    a = ok(signal(r, sl_pct="2"))
    assert (a["risk_ok"], a["qty"], a["tp_price"], a["sl_price"]) == (
        True, "50.000000", "102.00", "98.00")
    assert ledger(r)["reserved_for_orders"] == "5055.05"

    # defaults tp 2 %, sl 1 % -> 99.00: stop distance 1 -> qty 100, 10000 of notional:
    # more than the 4944.95 left
    assert ok(signal(r))["risk_reason"] == "INSUFFICIENT_CAPITAL"

    # notional 1000 at 300 -> 3.333333 (rounded down to 6 places);
    # reserves 3.333333 * 300 * 1.01 * 1.001 = 1011.009898899 -> 1011.01
    b = ok(signal(r, price="300", notional="1000", tp_pct="10", sl_pct="5"))
    assert (b["qty"], b["tp_price"], b["sl_price"]) == ("3.333333", "330.00", "285.00")

    # risk again: sl 3 % -> 97.00, stop 3 -> 100 / 3 = 33.333333 (equity is still 10000:
    # reservations do not lower it); reserves 33.333333 * 100 * 1.01101 = 3370.0332...
    # -> 3370.04
    c = ok(signal(r, sl_pct="3"))
    assert (c["qty"], c["sl_price"]) == ("33.333333", "97.00")

    # qty wins over the risk sizing
    d = ok(signal(r, qty="1", sl_pct="3"))
    assert d["qty"] == "1"  # reserves 1 * 100 * 1.01101 = 101.101 -> 101.11

    # 5055.05 + 1011.01 + 3370.04 + 101.11 = 9537.21
    led = ledger(r)
    assert (led["reserved_for_orders"], led["available"]) == ("9537.21", "462.79")
    orders = ok(r.request("order.list", {"profile_id": "p"}))["orders"]
    assert [o["qty"] for o in orders] == [a["qty"], "3.333333", "33.333333", "1"]
    assert [o["reserved"] for o in orders] == ["5055.05", "1011.01", "3370.04", "101.11"]


def test_oms_disabled_answers_and_audits_without_trading(live, raw, tmp_path):
    server = live(oms={"enabled": False})
    r = raw(server.endpoint)
    health = ok(r.request("system.health"))
    assert (health["oms_enabled"], health["broker_mode"]) == (False, "paper")
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))

    res = ok(signal(r, symbol="BTCUSDT", price="65000", qty="0.001", signal_id="x"))
    assert set(res) >= SIGNAL_KEYS
    assert (res["received"], res["oms_enabled"], res["risk_ok"], res["risk_reason"],
            res["order_id"], res["position_id"], res["reused"]) == (
        True, False, False, "OMS_DISABLED", None, None, False)
    # a malformed signal is still an error
    assert error(signal(r, price="abc"), "INVALID_ARGUMENT")["field"] == "price"
    assert ledger(r)["available"] == "1000.00"
    assert ok(r.request("order.list", {"profile_id": "p"}))["orders"] == []
    # both were received: one JSON line each, before anything else was decided
    lines = (tmp_path / "signals.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert '"signal_id":"x"' in lines[0] and '"price":"abc"' in lines[1]


def test_broker_that_gave_up_answers_broker_disconnected(market):
    _server, r = market(brokers={"accounts": {"paper": {
        "settings": {**SETTINGS, "fail_connects": 5}, "connect": {"max_attempts": 1}}}})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    res = ok(signal(r, qty="1"))
    assert (res["risk_ok"], res["risk_reason"], res["order_id"]) == (
        False, "BROKER_DISCONNECTED", None)
    details = error(r.request("order.submit", {
        "profile_id": "p", "client_order_id": "o1", "symbol": "TESTUSDT", "side": "BUY",
        "type": "LIMIT", "qty": "1", "price": "90"}), "UNAVAILABLE")
    assert (details["account_id"], details["state"]) == ("paper", "GAVE_UP")
    assert ledger(r)["reserved_for_orders"] == "0.00"


def test_repeated_signal_keeps_its_answer_when_the_broker_is_down(market, live, raw):
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    first = ok(signal(r, qty="1", signal_id="s1"))
    assert first["risk_ok"] is True
    server.stop()
    server.system.stop()

    # the same database, and a broker account that gives up connecting
    again = live(brokers={"accounts": {"paper": {
        "settings": {**SETTINGS, "fail_connects": 5}, "connect": {"max_attempts": 1}}}})
    r2 = raw(again.endpoint)
    res = ok(signal(r2, qty="1", signal_id="s1"))
    assert (res["reused"], res["risk_ok"], res["order_id"]) == (True, True, first["order_id"])


# -- the round trip: signals, fills, positions, closes, statistics --------------------------

ROUND_TRIP = [
    # T1: every entry fills (A, C at the ask 100.20; B sells at the bid 50.00; D buys at
    # the ask 50.10)
    [("OTHERUSDT", "50.00", "50.10"), ("TESTUSDT", "100.00", "100.20")],
    # T2: B's stop 51.00 is gapped: the short exits at the ask 51.60
    [("OTHERUSDT", "51.50", "51.60"), ("TESTUSDT", "101.00", "101.20")],
    # T3: A (close requested) exits at the bid 103.00; C's take-profit 102.00 fills at
    # the bid 103.00
    [("OTHERUSDT", "51.50", "51.60"), ("TESTUSDT", "103.00", "103.20")],
    [("OTHERUSDT", "51.50", "51.60"), ("TESTUSDT", "103.00", "103.20")],
]


def _positions(r, **filters) -> list[dict]:
    return ok(r.request("position.list", {"profile_id": "p", **filters}))["positions"]


def test_round_trip_signal_fill_close_and_stats(market):
    server, r = market(ROUND_TRIP)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    # A: BUY 10 TESTUSDT @ 100, tp 5 % -> 105.00, sl 2 % -> 98.00
    a = ok(signal(r, qty="10", tp_pct="5", sl_pct="2", signal_id="A", strategy="trend"))
    # B: SELL 4 OTHERUSDT @ 50, tp 4 % -> 48.00, sl 2 % -> 51.00
    b = ok(signal(r, symbol="OTHERUSDT", side="SELL", price="50", qty="4", tp_pct="4",
                  sl_pct="2", signal_id="B", strategy="revert"))
    # C: BUY 2 TESTUSDT @ 100, default tp 2 % -> 102.00, sl 1 % -> 99.00
    c = ok(signal(r, qty="2", signal_id="C", strategy="trend"))
    # D: BUY 1 OTHERUSDT @ 50, tp 10 % -> 55.00, sl 10 % -> 45.00: stays open
    d = ok(signal(r, symbol="OTHERUSDT", price="50", qty="1", tp_pct="10", sl_pct="10",
                  signal_id="D", strategy="trend"))
    assert (b["tp_price"], b["sl_price"], c["tp_price"], c["sl_price"]) == (
        "48.00", "51.00", "102.00", "99.00")
    assert _positions(r) == []  # a position opens with its first fill

    server.system.advance(1)  # T1
    # A: 10 @ 100.20 = 1002.00, fee 1.002 -> 1.01
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": a["order_id"]}))
    assert (order["status"], order["filled_qty"], order["avg_price"], order["reserved"]) == (
        "FILLED", "10", "100.20", "0.00")
    opened = _positions(r)
    ids = [x["position_id"] for x in (a, b, c, d)]
    assert [p["position_id"] for p in opened] == ids  # creation order
    assert all(p["status"] == "OPEN" for p in opened)
    pa = opened[0]
    assert (pa["side"], pa["qty_open"], pa["entry_price"], pa["entry_notional"],
            pa["reserved"], pa["fees"], pa["tp_price"], pa["sl_price"]) == (
        "BUY", "10", "100.20", "1002.00", "1002.00", "1.01", "105.00", "98.00")

    server.system.advance(1)  # T2: B stopped out
    closing = ok(r.request("position.close", {"profile_id": "p",
                                              "position_id": a["position_id"]}))
    assert (closing["status"], closing["close_requested"]) == ("OPEN", True)
    server.system.advance(1)  # T3: A closed by hand, C at its take-profit

    by_id = {p["position_id"]: p for p in _positions(r)}
    pa, pb, pc, pd = (by_id[i] for i in ids)
    # A: exit 10 @ 103.00 = 1030.00: pnl 1030.00 - 1002.00 = 28.00, taker fee 1.03;
    # fees 1.01 + 1.03 = 2.04, net 25.96
    assert (pa["status"], pa["close_reason"], pa["exit_price"], pa["qty_open"],
            pa["realized_pnl"], pa["fees"], pa["net_pnl"]) == (
        "CLOSED", "manual", "103.00", "0", "28.00", "2.04", "25.96")
    assert pa["closed_at"] is not None
    # B: entry 4 @ 50.00 = 200.00 (fee 0.20), exit 4 @ 51.60 = 206.40 (fee 0.2064 ->
    # 0.21): pnl 200.00 - 206.40 = -6.40, fees 0.41, net -6.81
    assert (pb["side"], pb["status"], pb["close_reason"], pb["exit_price"],
            pb["realized_pnl"], pb["fees"], pb["net_pnl"]) == (
        "SELL", "CLOSED", "sl", "51.60", "-6.40", "0.41", "-6.81")
    # C: entry 2 @ 100.20 = 200.40 (fee 0.2004 -> 0.21), exit 2 @ 103.00 = 206.00 at the
    # maker fee 0.103 -> 0.11: pnl 5.60, fees 0.32, net 5.28
    assert (pc["status"], pc["close_reason"], pc["exit_price"], pc["realized_pnl"],
            pc["fees"], pc["net_pnl"]) == ("CLOSED", "tp", "103.00", "5.60", "0.32", "5.28")
    # D: 1 @ 50.10 (fee 0.0501 -> 0.06), open
    assert (pd["status"], pd["close_reason"], pd["reserved"], pd["fees"]) == (
        "OPEN", None, "50.10", "0.06")

    # realized -6.40 + 28.00 + 5.60 = 27.20; fees 2.04 + 0.41 + 0.32 + 0.06 = 2.83;
    # available 10000 + 27.20 - 2.83 - 50.10 = 9974.27
    led = ledger(r)
    assert (led["realized_pnl"], led["fees"], led["reserved_for_positions"],
            led["reserved_for_orders"], led["available"]) == (
        "27.20", "2.83", "50.10", "0.00", "9974.27")

    # closing a closed position, or one that does not exist
    details = error(r.request("position.close", {"profile_id": "p",
                                                 "position_id": a["position_id"]}),
                    "CONFLICT")
    assert (details["position_id"], details["status"]) == (a["position_id"], "CLOSED")
    error(r.request("position.close", {"profile_id": "p", "position_id": b["position_id"]}),
          "CONFLICT")
    details = error(r.request("position.close", {"profile_id": "p",
                                                 "position_id": "pos_nope"}), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("position", "pos_nope")

    # filters
    assert [p["position_id"] for p in _positions(r, status="OPEN")] == [d["position_id"]]
    assert [p["position_id"] for p in _positions(r, status="closed")] == ids[:3]
    assert [p["position_id"] for p in _positions(r, symbol="OTHERUSDT")] == [
        b["position_id"], d["position_id"]]
    assert [p["position_id"] for p in _positions(r, status="CLOSED", symbol="OTHERUSDT")
            ] == [b["position_id"]]
    # paging: 3 closed positions, 2 per page
    first = ok(r.request("position.list", {"profile_id": "p", "status": "CLOSED",
                                           "limit": 2}))
    assert [p["position_id"] for p in first["positions"]] == ids[:2]
    assert isinstance(first["next_cursor"], str)
    second = ok(r.request("position.list", {"profile_id": "p", "status": "CLOSED",
                                            "limit": 2, "cursor": first["next_cursor"]}))
    assert [p["position_id"] for p in second["positions"]] == ids[2:3]
    assert second["next_cursor"] is None
    error(r.request("position.list", {"profile_id": "p", "limit": 0}), "INVALID_ARGUMENT")

    # statistics: trades are the closed positions, net of fees:
    # A 25.96 (manual), B -6.81 (sl), C 5.28 (tp); D is open
    s = ok(r.request("stats.get", {"profile_id": "p"}))
    assert (s["total_positions"], s["open_positions"], s["closed_positions"]) == (4, 1, 3)
    assert (s["winning_trades"], s["losing_trades"]) == (2, 1)
    assert (s["tp_count"], s["sl_count"], s["manual_count"]) == (1, 1, 1)
    closed = [pa, pb, pc]
    assert D(s["total_pnl"]) == sum(D(p["net_pnl"]) for p in closed)
    assert s["total_pnl"] == "24.43"  # 25.96 - 6.81 + 5.28
    assert (s["gross_profit"], s["gross_loss"]) == ("31.24", "-6.81")
    assert s["winrate"] == "0.6667"  # 2 / 3
    assert s["avg_pnl_per_trade"] == "8.14"  # 24.43 / 3 = 8.1433...
    assert s["avg_pnl_win"] == "15.62"  # 31.24 / 2
    assert s["avg_pnl_loss"] == "-6.81"
    assert s["profit_factor"] == "4.5874"  # 31.24 / 6.81 = 4.58737...
    # B closed first: cumulative 0 -> -6.81, then up again
    assert s["max_drawdown"] == "6.81"
    assert s["max_drawdown_pct"] == "0.0007"  # 6.81 / (10000 + 0) = 0.000681
    assert "groups" not in s

    g = ok(r.request("stats.get", {"profile_id": "p", "group_by": "strategy"}))
    assert {k: v for k, v in g.items() if k != "groups"} == s
    assert sorted(g["groups"]) == ["revert", "trend"]
    trend, revert = g["groups"]["trend"], g["groups"]["revert"]
    # trend: A 25.96 + C 5.28 = 31.24, and D open
    assert (trend["total_positions"], trend["open_positions"], trend["closed_positions"],
            trend["total_pnl"], trend["winrate"], trend["profit_factor"],
            trend["tp_count"], trend["manual_count"]) == (
        3, 1, 2, "31.24", "1.0000", None, 1, 1)
    # revert: B -6.81
    assert (revert["total_positions"], revert["closed_positions"], revert["total_pnl"],
            revert["losing_trades"], revert["sl_count"], revert["max_drawdown"]) == (
        1, 1, "-6.81", 1, 1, "6.81")
    by_symbol = ok(r.request("stats.get", {"profile_id": "p", "group_by": "symbol"}))
    # OTHERUSDT: B -6.81 (D open); TESTUSDT: A 25.96 + C 5.28 = 31.24
    assert {k: v["total_pnl"] for k, v in by_symbol["groups"].items()} == {
        "OTHERUSDT": "-6.81", "TESTUSDT": "31.24"}
    assert error(r.request("stats.get", {"group_by": "side"}),
                 "INVALID_ARGUMENT")["field"] == "group_by"


# -- order.* --------------------------------------------------------------------------------

ORDER_PATH = [
    [("TESTUSDT", "100.00", "100.20")],  # T1: the market has a price
    [("TESTUSDT", "101.00", "101.20")],  # T2: the MARKET order fills at the ask 101.20
    [("TESTUSDT", "95.00", "95.20")],  # T3: ask 95.20 <= 96: the LIMIT at 96 fills at 95.20
    [("TESTUSDT", "95.00", "95.20")],
]


def _order(client_order_id, type="LIMIT", qty="2", **more) -> dict:
    return {"profile_id": "p", "client_order_id": client_order_id, "symbol": "TESTUSDT",
            "side": "BUY", "type": type, "qty": qty, **more}


def test_order_submit_cancel_get_and_list(market):
    server, r = market(ORDER_PATH)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)  # T1

    # a LIMIT reserves qty * limit * (1 + maker fee): 2 * 90 * 1.0005 = 180.09
    lim = ok(r.request("order.submit", _order("lim-1", price="90")))
    assert (lim["type"], lim["side"], lim["status"], lim["qty"], lim["filled_qty"],
            lim["price"], lim["reserved"], lim["reused"], lim["client_order_id"]) == (
        "LIMIT", "BUY", "OPEN", "2", "0", "90", "180.09", False, "lim-1")
    assert lim["avg_price"] is None and lim["position_id"].startswith("pos_")
    assert ledger(r)["reserved_for_orders"] == "180.09"

    # the same client_order_id and content: the same order, nothing new reserved
    again = ok(r.request("order.submit", _order("lim-1", type="limit", price="90")))
    assert (again["order_id"], again["reused"]) == (lim["order_id"], True)
    assert ledger(r)["reserved_for_orders"] == "180.09"
    details = error(r.request("order.submit", _order("lim-1", qty="3", price="90")),
                    "CONFLICT")
    assert (details["client_order_id"], details["order_id"]) == ("lim-1", lim["order_id"])

    # arguments that cannot make an order
    cases = [
        (_order("bad-1"), "price"),  # LIMIT without price
        (_order("bad-2", type="TRAILING", price="90"), "type"),
        (_order("bad-3", price="90", tp_price="85"), "tp_price"),  # a BUY takes profit above
        (_order("bad-4", price="90", sl_price="95"), "sl_price"),  # ... and stops below
        ({**_order("bad-5", type="MARKET", qty="1"), "side": "SELL", "tp_price": "120"},
         "tp_price"),  # a SELL at the bid 100.00 takes profit below
        (_order("bad-6", qty="0.0000001", price="90"), "qty"),
        (_order("bad-7", qty="-1", price="90"), "qty"),
        ({**_order("bad-8", price="90"), "side": "up"}, "side"),
        ({**_order("bad-9", price="90"), "tif": "GTC"}, "tif"),
    ]
    for args, field in cases:
        assert error(r.request("order.submit", args), "INVALID_ARGUMENT")["field"] == field, (
            args)
    details = error(r.request("order.submit", {**_order("x", price="90"),
                                               "profile_id": "ghost"}), "NOT_FOUND")
    assert details["kind"] == "profile"

    # cancel the working LIMIT: its capital comes back
    canceled = ok(r.request("order.cancel", {"profile_id": "p", "order_id": lim["order_id"]}))
    assert (canceled["order_id"], canceled["status"], D(canceled["reserved"])) == (
        lim["order_id"], "CANCELED", 0)
    led = ledger(r)
    assert (led["reserved_for_orders"], led["available"]) == ("0.00", "10000.00")
    details = error(r.request("order.cancel", {"profile_id": "p",
                                               "order_id": lim["order_id"]}), "CONFLICT")
    assert (details["order_id"], details["status"]) == (lim["order_id"], "CANCELED")
    details = error(r.request("order.cancel", {"profile_id": "p", "order_id": "ord_nope"}),
                    "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("order", "ord_nope")
    error(r.request("order.get", {"profile_id": "p", "order_id": "ord_nope"}), "NOT_FOUND")
    # a repeat of a finished order answers it as it is now
    again = ok(r.request("order.submit", _order("lim-1", price="90")))
    assert (again["order_id"], again["status"], again["reused"]) == (
        lim["order_id"], "CANCELED", True)

    # a MARKET order without price reserves at the current ask 100.20:
    # 1 * 100.20 * 1.01 * 1.001 = 101.302... -> 101.31
    mkt = ok(r.request("order.submit", _order("mkt-1", type="MARKET", qty="1",
                                              tp_price="110", sl_price="90")))
    assert (mkt["type"], mkt["price"], mkt["reserved"], mkt["tp_price"], mkt["sl_price"]) == (
        "MARKET", None, "101.31", "110", "90")
    # 1 * 96 * 1.0005 = 96.048 -> 96.05; 1 * 50 * 1.0005 = 50.025 -> 50.03
    lim2 = ok(r.request("order.submit", _order("lim-2", qty="1", price="96")))
    lim3 = ok(r.request("order.submit", _order("lim-3", qty="1", price="50")))
    assert (lim2["reserved"], lim3["reserved"]) == ("96.05", "50.03")
    assert ledger(r)["reserved_for_orders"] == "247.39"  # 101.31 + 96.05 + 50.03

    server.system.advance(1)  # T2: the MARKET fills at the ask 101.20
    got = ok(r.request("order.get", {"profile_id": "p", "order_id": mkt["order_id"]}))
    assert (got["status"], got["filled_qty"], got["avg_price"], got["reserved"]) == (
        "FILLED", "1", "101.20", "0.00")
    assert ok(r.request("order.get", {"profile_id": "p",
                                      "order_id": lim2["order_id"]}))["status"] == "OPEN"
    server.system.advance(1)  # T3: the LIMIT at 96 fills at the better ask 95.20
    got = ok(r.request("order.get", {"profile_id": "p", "order_id": lim2["order_id"]}))
    assert (got["status"], got["avg_price"]) == ("FILLED", "95.20")
    # only lim-3 still holds capital
    assert ledger(r)["reserved_for_orders"] == "50.03"

    def listed(**args) -> list[str]:
        res = ok(r.request("order.list", {"profile_id": "p", **args}))
        return [o["order_id"] for o in res["orders"]]

    everything = [lim["order_id"], mkt["order_id"], lim2["order_id"], lim3["order_id"]]
    assert listed() == everything
    assert listed(status="FILLED") == [mkt["order_id"], lim2["order_id"]]
    assert listed(status="canceled") == [lim["order_id"]]
    assert listed(status="OPEN") == [lim3["order_id"]]
    assert listed(symbol="OTHERUSDT") == []
    page = ok(r.request("order.list", {"profile_id": "p", "limit": 3}))
    assert [o["order_id"] for o in page["orders"]] == everything[:3]
    rest = ok(r.request("order.list", {"profile_id": "p", "limit": 3,
                                       "cursor": page["next_cursor"]}))
    assert [o["order_id"] for o in rest["orders"]] == everything[3:]
    assert rest["next_cursor"] is None


def test_repeated_market_order_after_the_market_moved_is_reused(market):
    server, r = market(ORDER_PATH)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)  # T1: ask 100.20
    first = ok(r.request("order.submit", _order("mkt", type="MARKET", qty="1")))
    server.system.advance(1)  # T2: the ask is 101.20 now; the order filled
    again = r.request("order.submit", _order("mkt", type="MARKET", qty="1"))
    res = ok(again)
    assert (res["order_id"], res["reused"]) == (first["order_id"], True)


@pytest.mark.parametrize("op", ["order.list", "position.list", "stats.get"])
def test_lists_of_an_unknown_profile_are_not_found(market, op):
    _server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    details = error(r.request(op, {"profile_id": "ghost"}), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("profile", "ghost")


# -- market.price -----------------------------------------------------------------------------

def test_market_price(market):
    server, r = market(ROUND_TRIP)
    # nothing has ticked yet
    details = error(r.request("market.price", {"symbol": "TESTUSDT"}), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("symbol", "TESTUSDT")
    server.system.advance(1)
    p = ok(r.request("market.price", {"symbol": "TESTUSDT"}))
    assert (p["symbol"], p["bid"], p["ask"], p["last"]) == (
        "TESTUSDT", "100.00", "100.20", "100.10")  # last: the mid when the file has none
    assert D(p["bid"]) < D(p["ask"])
    assert p["ts"] == "2026-01-05T12:00:01.000000+00:00"
    server.system.advance(1)
    p = ok(r.request("market.price", {"symbol": "OTHERUSDT"}))
    assert (p["bid"], p["ask"], p["ts"]) == ("51.50", "51.60",
                                             "2026-01-05T12:00:02.000000+00:00")
    details = error(r.request("market.price", {"symbol": "NOPEUSDT"}), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("symbol", "NOPEUSDT")
    assert error(r.request("market.price", {}), "INVALID_ARGUMENT")["field"] == "symbol"


# -- events -----------------------------------------------------------------------------------

def _frames_until(sub, predicate, timeout_s=5.0) -> list[tuple[str, dict]]:
    """Frames received until one matches `predicate` (failing after `timeout_s`)."""
    seen: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not sub.poll(100):
            continue
        topic, body = sub.recv_multipart()
        frame = (topic.decode(), msgpack.unpackb(body, raw=False))
        seen.append(frame)
        if predicate(*frame):
            return seen
    raise AssertionError(f"no matching frame within {timeout_s} s; saw {seen}")


def test_events_tick_signal_and_position_closed(market):
    server, r = market()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(server.events_endpoint)
        for prefix in (b"tick.", b"position.", b"signal."):
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        time.sleep(0.2)  # let the subscription reach the server

        ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
        s = ok(signal(r, qty="1", signal_id="e1", strategy="trend"))
        seen = _frames_until(sub, lambda topic, body: topic == "signal.p")
        body = seen[-1][1]
        assert (body["type"], body["profile_id"], body["signal"]["signal_id"],
                body["signal"]["risk_ok"], body["signal"]["order_id"],
                body["signal"]["qty"]) == ("SignalRecorded", "p", "e1", True,
                                           s["order_id"], "1")

        server.system.advance(1)
        seen = _frames_until(sub, lambda topic, body: topic == "tick.TESTUSDT")
        topic, tick = seen[-1]
        assert (tick["type"], tick["symbol"], tick["bid"], tick["ask"], tick["last"]) == (
            "Tick", "TESTUSDT", "100.00", "100.20", "100.10")
        assert tick["ts"] == "2026-01-05T12:00:01.000000+00:00"
        assert tick["seq"] == 1 and tick["tick_seq"] == 1

        ok(r.request("position.close", {"profile_id": "p", "position_id": s["position_id"]}))
        server.system.advance(1)
        seen = _frames_until(sub, lambda topic, body: body["type"] == "PositionClosed")
        topic, closed = seen[-1]
        assert topic == "position.p"
        assert (closed["profile_id"], closed["position"]["position_id"],
                closed["position"]["status"], closed["position"]["close_reason"],
                closed["position"]["exit_price"]) == (
            "p", s["position_id"], "CLOSED", "manual", "100.00")
        # the close request was published first, on the same topic
        requested = [b for t, b in seen if b["type"] == "PositionCloseRequested"]
        assert [(b["seq"], b["position"]["close_requested"]) for b in requested] == [
            (1, "manual")]
        assert closed["seq"] == 2 and closed["ts"].endswith("+00:00")
        # the second tick came on the same topic with the next seq
        ticks = [b for t, b in seen if t == "tick.TESTUSDT"]
        assert [b["seq"] for b in ticks] == [2]
        # only the subscribed prefixes arrive
        assert all(t.split(".")[0] in ("tick", "position", "signal") for t, _ in seen)
    finally:
        sub.close(0)
        ctx.term()

