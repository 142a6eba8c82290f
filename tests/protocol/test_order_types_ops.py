"""Order types and time in force on the wire: `order.submit`'s and `signal.submit`'s
optional `type` / `trigger_price` / `time_in_force` / `expire_at`, what the order answers
carry, and the codes of what cannot be an order. Old requests are answered as before
(GTC)."""

from __future__ import annotations

import time

from .replies import error, ok
from .test_trading_ops import TS, _order, ledger

# taker 0.1 %, maker 0.05 %, no slippage (tests/protocol/market.py)


def test_stop_and_gtd_orders_on_the_wire(market):
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)  # 100.00 / 100.20

    # an old request: a GTC order, as always
    old = ok(r.request("order.submit", _order("old", price="90")))
    assert (old["time_in_force"], old["trigger_price"], old["expire_at"],
            old["end_reason"]) == ("GTC", None, None, None)

    # a STOP BUY 2 triggered at 102, until an hour from now:
    # 2 * 102 * 1.01 * 1.001 = 206.24604 -> 206.25
    expire = int(time.time()) + 3600
    stop = ok(r.request("order.submit", _order("stop", type="stop", trigger_price="102",
                                               time_in_force="gtd", expire_at=expire)))
    assert (stop["type"], stop["trigger_price"], stop["time_in_force"], stop["reserved"],
            stop["max_price"], stop["status"]) == (
        "STOP", "102", "GTD", "206.25", "103.02", "OPEN")
    assert stop["expire_at"] is not None
    got = ok(r.request("order.get", {"profile_id": "p", "order_id": stop["order_id"]}))
    assert (got["type"], got["trigger_price"], got["time_in_force"]) == ("STOP", "102", "GTD")
    assert got["expire_at"] == stop["expire_at"]

    # a STOP_LIMIT reserves as a limit at its price: 2 * 103 * 1.0005 = 206.103 -> 206.11
    sl = ok(r.request("order.submit", _order("stop-limit", type="STOP_LIMIT", price="103",
                                             trigger_price="102")))
    assert (sl["type"], sl["price"], sl["trigger_price"], sl["reserved"]) == (
        "STOP_LIMIT", "103", "102", "206.11")

    # a FOK limit the market does not cross is canceled whole on the next tick
    fok = ok(r.request("order.submit", _order("fok", price="95", time_in_force="FOK")))
    server.system.advance(1)
    fok = ok(r.request("order.get", {"profile_id": "p", "order_id": fok["order_id"]}))
    assert (fok["status"], fok["end_reason"], fok["reserved"]) == (
        "CANCELED", "fok_unfilled", "0")

    cases = [
        (_order("bad-1", type="STOP"), "trigger_price"),
        (_order("bad-2", type="STOP_LIMIT", trigger_price="102"), "price"),
        (_order("bad-3", price="90", trigger_price="95"), "trigger_price"),
        (_order("bad-4", price="90", time_in_force="DAY"), "time_in_force"),
        (_order("bad-5", price="90", time_in_force="GTD"), "expire_at"),
        (_order("bad-6", price="90", time_in_force="GTD", expire_at=int(time.time()) - 5),
         "expire_at"),
        (_order("bad-7", price="90", time_in_force="GTD", expire_at="tomorrow"), "expire_at"),
        (_order("bad-8", price="90", expire_at=expire), "expire_at"),
        (_order("bad-9", price="90", time_in_force="GTD", expire_at=[1]), "expire_at"),
    ]
    before = ledger(r)["reserved_for_orders"]
    for args, field in cases:
        details = error(r.request("order.submit", args), "INVALID_ARGUMENT")
        assert details["field"] == field, (args, details)
    assert ledger(r)["reserved_for_orders"] == before


def test_a_signal_takes_a_time_in_force(market):
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    base = {"profile_id": "p", "symbol": "TESTUSDT", "side": "BUY", "price": "100",
            "timestamp": TS, "qty": "1"}
    a = ok(r.request("signal.submit", {**base, "time_in_force": "IOC"}))
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": a["order_id"]}))
    assert (order["type"], order["time_in_force"]) == ("MARKET", "IOC")
    details = error(r.request("signal.submit", {**base, "time_in_force": "GTD"}),
                    "INVALID_ARGUMENT")
    assert details["field"] == "expire_at"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    g = ok(r.request("signal.submit", {**base, "time_in_force": "GTD", "expire_at": at}))
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": g["order_id"]}))
    assert order["time_in_force"] == "GTD" and order["expire_at"] is not None


def test_the_command_line_places_a_gtd_stop(market):
    """`capflow call` reads expire_at as typed (TOML would make it a datetime that msgpack
    cannot carry) and the numbers as numbers."""
    import io
    import json

    from capflow import run

    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    out = io.StringIO()
    args = run._parser().parse_args([
        "call", "order.submit", "profile_id=p", "client_order_id=cli-stop",
        "symbol=TESTUSDT", "side=BUY", "type=STOP", "qty=2", "trigger_price=102",
        "time_in_force=GTD", f"expire_at={at}", "--endpoint", server.endpoint])
    assert run.call_command(server.system.config, args, out) == 0
    order = json.loads(out.getvalue())
    assert (order["type"], order["trigger_price"], order["time_in_force"]) == (
        "STOP", "102", "GTD")
    assert order["expire_at"].startswith(at[:-1])
