"""Trailing stops and `position.set_stops` on the wire, over a replayed price path
(tests/fixtures/trail_path.csv: one symbol, 28 ticks up, down and a gap)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import zmq

from .market import SETTINGS, write_ticks
from .replies import error, ok
from .test_trading_ops import TS, _order

PATH = str(Path(__file__).parent.parent / "fixtures" / "trail_path.csv")

#: the long below (bought on tick 2, trail 1.50 from an activation bid of 101.00): its
#: stop after each tick from tick 3, worked out by hand from the bids of the path --
#: None until the bid reaches 101.00, then the best bid less 1.50, never lower; tick 21
#: gaps to 101.00, below the stop 103.30: the position exits there, reason "trail"
EXPECTED = [
    (3, "100.50", None), (4, "101.00", "99.50"), (5, "101.40", "99.90"),
    (6, "101.20", "99.90"), (7, "102.00", "100.50"), (8, "101.80", "100.50"),
    (9, "102.55", "101.05"), (10, "102.10", "101.05"), (11, "103.30", "101.80"),
    (12, "103.05", "101.80"), (13, "104.00", "102.50"), (14, "103.60", "102.50"),
    (15, "104.35", "102.85"), (16, "103.90", "102.85"), (17, "103.20", "102.85"),
    (18, "104.80", "103.30"), (19, "104.10", "103.30"), (20, "103.50", "103.30"),
]
TRIGGER_TICK, EXIT_PRICE, LAST_STOP = 21, "101.00", "103.30"


def _start(live, raw, **sections):
    server = live(simulator={"replay": PATH, "symbols": {}},
                  brokers={"accounts": {"paper": {"settings": SETTINGS}}}, **sections)
    return server, raw(server.endpoint)


def _position(r, profile_id="p") -> dict:
    (p,) = ok(r.request("position.list", {"profile_id": profile_id}))["positions"]
    return p


def test_a_trailing_stop_follows_the_path_and_triggers_once(live, raw):
    server, r = _start(live, raw, oms={"trail_event_interval_s": 3600})
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(server.events_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"position.p")
    try:
        ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
        server.system.advance(1)
        o = ok(r.request("order.submit", _order("trail", type="MARKET", qty="1",
                                                trail_amount="1.50",
                                                trail_activation="101.00")))
        assert (o["trail_amount"], o["trail_pct"], o["trail_activation"]) == (
            "1.50", None, "101.00")
        server.system.advance(1)  # tick 2: bought at the ask 100.30
        p = _position(r)
        assert (p["entry_price"], p["trail_best"], p["trail_stop"]) == ("100.30", None, None)
        for tick, bid, stop in EXPECTED:
            server.system.advance(1)
            p = _position(r)
            assert p["status"] == "OPEN", tick
            assert (p["trail_best"] is not None, p["trail_stop"]) == (stop is not None,
                                                                       stop), (tick, bid)
        server.system.advance(1)  # tick 21: the gap
        (closed,) = ok(r.request("position.list", {"profile_id": "p",
                                                   "status": "CLOSED"}))["positions"]
        assert (closed["close_reason"], closed["exit_price"], closed["trail_stop"],
                closed["qty_open"]) == ("trail", EXIT_PRICE, LAST_STOP, "0")
        server.system.advance(7)  # the rest of the path: nothing more happens
        assert ok(r.request("position.list", {"profile_id": "p",
                                              "status": "OPEN"}))["positions"] == []
        stats = ok(r.request("stats.get", {"profile_id": "p"}))
        assert (stats["closed_positions"], stats["sl_count"]) == (1, 1)
        # the stream: the first move at once, later ones held back by the interval,
        # the last stop before the close always sent, then one close
        kinds = []
        while sub.poll(500):
            _topic, body = sub.recv_multipart()
            e = msgpack.unpackb(body, raw=False)
            kinds.append((e["type"], e["position"]["trail_stop"]))
        assert kinds == [("TrailMoved", "99.50"), ("TrailMoved", LAST_STOP),
                         ("PositionClosed", LAST_STOP)]
    finally:
        sub.close(0)
        ctx.term()


def _stops(r, position_id, **args):
    return r.request("position.set_stops", {"profile_id": "p", "position_id": position_id,
                                            **args})


def test_set_stops_moves_checks_the_side_and_survives_a_restart(live, raw, tmp_path,
                                                                 sqlite_url):
    first = write_ticks(tmp_path / "first.csv", [[("TESTUSDT", "100.00", "100.20")],
                                                 [("TESTUSDT", "100.10", "100.30")],
                                                 [("TESTUSDT", "100.50", "100.70")]])
    server = live(simulator={"replay": first, "symbols": {}},
                  brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    r = raw(server.endpoint)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    ok(r.request("order.submit", _order("o", type="MARKET", qty="1", tp_price="110",
                                        sl_price="95")))
    server.system.advance(2)  # filled at 100.30; the bid is 100.50 now
    pid = _position(r)["position_id"]

    moved = ok(_stops(r, pid, sl_price="99.00", tp_price="101.00"))
    assert (moved["position_id"], moved["tp_price"], moved["sl_price"]) == (
        pid, "101.00", "99.00")
    # the same again changes nothing
    assert ok(_stops(r, pid, sl_price="99.00")) == moved
    # a long's stop-loss at or above the bid, its take-profit at or below it
    assert error(_stops(r, pid, sl_price="100.50"), "INVALID_ARGUMENT")["field"] == "sl_price"
    assert error(_stops(r, pid, tp_price="100.40"), "INVALID_ARGUMENT")["field"] == "tp_price"
    assert error(_stops(r, pid, trail_amount="1", trail_pct="1"),
                 "INVALID_ARGUMENT")["field"] == "trail_amount"
    assert error(_stops(r, pid, clear=["everything"]), "INVALID_ARGUMENT")["field"] == "clear"
    error(_stops(r, "pos_nope", sl_price="99"), "NOT_FOUND")
    # a trail set, then it and the take-profit cleared
    trailed = ok(_stops(r, pid, trail_pct="1"))
    assert (trailed["trail_pct"], trailed["trail_best"], trailed["sl_price"]) == (
        "1", None, "99.00")
    cleared = ok(_stops(r, pid, clear=["tp", "trail"]))
    assert (cleared["tp_price"], cleared["trail_pct"], cleared["sl_price"]) == (
        None, None, "99.00")

    # a restart keeps the new stop-loss, and the broker gets it back: it stops out there
    server.stop()
    server.system.stop()
    rest = write_ticks(tmp_path / "rest.csv", [[("TESTUSDT", "99.50", "99.70")],
                                               [("TESTUSDT", "98.90", "99.10")]])
    server = live(sqlite_url, simulator={"replay": rest, "symbols": {}},
                  brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    r = raw(server.endpoint)
    p = _position(r)
    assert (p["tp_price"], p["sl_price"], p["trail_pct"]) == (None, "99.00", None)
    server.system.advance(1)
    assert _position(r)["status"] == "OPEN"
    server.system.advance(1)
    (closed,) = ok(r.request("position.list", {"profile_id": "p",
                                               "status": "CLOSED"}))["positions"]
    assert (closed["close_reason"], closed["exit_price"]) == ("sl", "98.90")
    assert error(_stops(r, pid, sl_price="90"), "CONFLICT")["status"] == "CLOSED"


def test_a_trail_on_a_signal_and_on_a_repeated_order_key(live, raw):
    server, r = _start(live, raw)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    sig = {"profile_id": "p", "symbol": "TESTUSDT", "side": "BUY", "price": "100.20",
           "timestamp": TS, "qty": "1", "signal_id": "s1", "trail_pct": "1"}
    answer = ok(r.request("signal.submit", sig))
    assert answer["risk_ok"] is True, answer
    # the trail is part of what a repeated signal_id must match
    assert ok(r.request("signal.submit", sig))["reused"] is True
    error(r.request("signal.submit", {**sig, "trail_pct": "2"}), "CONFLICT")
    # and of what a repeated client_order_id must match
    order = _order("k", type="MARKET", qty="1", trail_amount="2")
    first = ok(r.request("order.submit", order))
    assert ok(r.request("order.submit", order))["reused"] is True
    error(r.request("order.submit", {**order, "trail_amount": "3"}), "CONFLICT")
    error(r.request("order.submit", {k: v for k, v in order.items()
                                     if k != "trail_amount"}), "CONFLICT")
    server.system.advance(2)  # tick 2 fills both at 100.30; tick 3: bid 100.50
    by_order = {p["order_id"]: p for p in ok(r.request(
        "position.list", {"profile_id": "p"}))["positions"]}
    # 1 % behind 100.50 = 99.495, rounded up: 99.50; 2 behind: 98.50
    assert (by_order[answer["order_id"]]["trail_pct"],
            by_order[answer["order_id"]]["trail_stop"]) == ("1", "99.50")
    assert (by_order[first["order_id"]]["trail_amount"],
            by_order[first["order_id"]]["trail_stop"]) == ("2", "98.50")
    # a trail needs its distance; one of the two, not both
    assert error(r.request("order.submit", _order("x", type="MARKET", qty="1",
                                                  trail_activation="101")),
                 "INVALID_ARGUMENT")["field"] == "trail_activation"
    assert error(r.request("signal.submit", {**sig, "signal_id": "s2", "trail_pct": "100"}),
                 "INVALID_ARGUMENT")["field"] == "trail_pct"
    # after a restart, the stored order still matches its repeat, trail and all
    server.stop()
    server.system.stop()
    server, r = _start(live, raw)
    server.system.advance(1)  # a market price: the repeat is checked like the first
    assert ok(r.request("order.submit", order))["reused"] is True
    error(r.request("order.submit", {**order, "trail_amount": "3"}), "CONFLICT")
