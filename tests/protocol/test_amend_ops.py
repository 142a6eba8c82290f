"""`order.amend`, scale-in (`order.submit` with `position_id`) and `position.reduce`
through the wire: a raw DEALER socket, a real server over a real System, the paper
broker (taker 0.1 %, maker 0.05 %), the market replayed one step at a time. Each new
answer, code and reason is met once: the amended order map, INSUFFICIENT_CAPITAL,
CONFLICT with ORDER_NOT_AMENDABLE / EXITING, INVALID_ARGUMENT, NOT_FOUND, and the
OrderAmended event on the order topic."""

from __future__ import annotations

import msgpack

from .replies import error, ok
from .test_safety_ops import subscribe


def _order(client_order_id, type="LIMIT", qty="2", **more) -> dict:
    return {"profile_id": "p", "client_order_id": client_order_id, "symbol": "TESTUSDT",
            "side": "BUY", "type": type, "qty": qty, **more}


def test_order_amend_over_the_wire(market):
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    server.system.advance(1)  # the market: 100.00 / 100.20
    lim = ok(r.request("order.submit", _order("lim-1", price="90")))
    assert lim["reserved"] == "180.09"  # 2 * 90 * 1.0005
    ref = {"profile_id": "p", "order_id": lim["order_id"]}

    # 3 * 95 = 285, fee 0.1425 -> 0.15: 285.15 reserved, 105.06 more taken
    a = ok(r.request("order.amend", {**ref, "qty": "3", "price": "95"}))
    assert (a["order_id"], a["qty"], a["price"], a["reserved"], a["status"]) == (
        lim["order_id"], "3", "95", "285.15", "OPEN")
    led = ok(r.request("ledger.get", {"profile_id": "p"}))
    assert (led["reserved_for_orders"], led["available"]) == ("285.15", "714.85")
    got = ok(r.request("order.get", ref))
    assert (got["qty"], got["price"], got["reserved"]) == ("3", "95", "285.15")

    # 20 * 95 = 1900 + 0.95 fee: 1615.80 more than the 285.15 held, and 714.85 is
    # available; nothing changes
    details = error(r.request("order.amend", {**ref, "qty": "20"}), "INSUFFICIENT_CAPITAL")
    assert (details["requested"], details["available"]) == ("1615.80", "714.85")
    assert ok(r.request("order.get", ref))["qty"] == "3"

    # what is wrong with the arguments is named
    assert error(r.request("order.amend", ref), "INVALID_ARGUMENT")["field"] == "qty"
    assert error(r.request("order.amend", {**ref, "trigger_price": "99"}),
                 "INVALID_ARGUMENT")["field"] == "trigger_price"
    assert error(r.request("order.amend", {**ref, "qty": "3.0000001"}),
                 "INVALID_ARGUMENT")["field"] == "qty"
    assert error(r.request("order.amend", {**ref, "qty": True}),
                 "INVALID_ARGUMENT")["field"] == "qty"
    assert error(r.request("order.amend", {**ref, "colour": "red"}),
                 "INVALID_ARGUMENT")["field"] == "colour"
    assert error(r.request("order.amend", {"profile_id": "p", "order_id": "ord_nope",
                                           "qty": "1"}), "NOT_FOUND")["kind"] == "order"

    # a MARKET order is not amendable, nor one that ended
    mkt = ok(r.request("order.submit", _order("mkt-1", type="MARKET", qty="1")))
    details = error(r.request("order.amend", {"profile_id": "p", "order_id": mkt["order_id"],
                                              "qty": "2"}), "CONFLICT")
    assert (details["reason"], details["type"]) == ("ORDER_NOT_AMENDABLE", "MARKET")
    ok(r.request("order.cancel", ref))
    details = error(r.request("order.amend", {**ref, "qty": "1"}), "CONFLICT")
    assert (details["reason"], details["status"]) == ("ORDER_NOT_AMENDABLE", "CANCELED")


def test_order_submit_with_a_position_id_scales_in(market):
    steps = [[("TESTUSDT", "100.00", "100.20")]] * 2 + [[("TESTUSDT", "98.80", "98.90")]]
    server, r = market(steps)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    first = ok(r.request("order.submit", _order("e-1", type="MARKET", sl_price="90")))
    server.system.advance(1)  # 2 @ 100.20
    pid = first["position_id"]
    add = ok(r.request("order.submit", _order("dca-1", qty="1", price="99",
                                              position_id=pid)))
    assert (add["position_id"], add["reserved"]) == (pid, "99.05")
    server.system.advance(1)  # 1 @ 98.90
    [p] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    assert (p["position_id"], p["qty_open"], p["entry_price"], p["sl_price"]) == (
        pid, "3", "99.7666666667", "90")
    details = error(r.request("order.submit", _order("dca-2", qty="1", price="99",
                                                     position_id="pos_nope")), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("position", "pos_nope")
    details = error(r.request("order.submit", {**_order("dca-3", qty="1", price="101"),
                                               "side": "SELL", "position_id": pid}),
                    "CONFLICT")
    assert (details["position_id"], details["side"]) == (pid, "BUY")


def test_position_reduce_over_the_wire(market):
    steps = [[("TESTUSDT", "100.00", "100.20")]] * 2 + [[("TESTUSDT", "101.00", "101.20")]]
    server, r = market(steps)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)
    first = ok(r.request("order.submit", _order("e-1", type="MARKET", qty="10")))
    server.system.advance(1)  # 10 @ 100.20 = 1002.00
    ref = {"profile_id": "p", "position_id": first["position_id"]}
    asked = ok(r.request("position.reduce", {**ref, "fraction": "0.25"}))
    assert (asked["reduce_qty"], asked["close_requested"], asked["qty_open"]) == (
        "2.5", False, "10")
    details = error(r.request("position.reduce", {**ref, "qty": "1"}), "CONFLICT")
    assert details["status"] == "EXITING"
    server.system.advance(1)  # 2.5 @ 101.00 = 252.50; released 250.50
    [p] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    assert (p["qty_open"], p["reserved"], p["realized_pnl"]) == ("7.5", "751.50", "2.00")
    assert error(r.request("position.reduce", {**ref, "fraction": "2"}),
                 "INVALID_ARGUMENT")["field"] == "fraction"
    assert error(r.request("position.reduce", ref), "INVALID_ARGUMENT")["field"] == "qty"
    assert error(r.request("position.reduce", {"profile_id": "p", "position_id": "pos_x",
                                               "qty": "1"}), "NOT_FOUND")["kind"] == "position"
    closing = ok(r.request("position.reduce", {**ref, "qty": "7.5"}))
    assert (closing["reduce_qty"], closing["close_requested"]) == ("7.5", True)


def test_an_amend_is_published_on_the_order_topic(market):
    server, r = market()
    ctx, sub = subscribe(server, b"order.p")
    try:
        ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
        server.system.advance(1)
        lim = ok(r.request("order.submit", _order("lim-1", price="90")))
        ok(r.request("order.amend", {"profile_id": "p", "order_id": lim["order_id"],
                                     "qty": "1"}))
        seen = []
        while sub.poll(5000):
            topic, body = sub.recv_multipart()
            event = msgpack.unpackb(body)
            seen.append(event["type"])
            if event["type"] == "OrderAmended":
                break
        assert topic == b"order.p" and seen[-1] == "OrderAmended", seen
        # 1 * 90 + 0.045 -> 0.05: 90.05, 90.04 given back
        assert (event["order"]["qty"], event["order"]["reserved"], event["prev_qty"],
                event["prev_reserved"], event["delta"]) == ("1", "90.05", "2", "180.09",
                                                            "-90.04")
        assert event["causation_id"] == f"amend:{lim['order_id']}"
    finally:
        sub.close()
        ctx.term()
