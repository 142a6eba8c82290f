"""The kill switch through the wire: `flatten`, `account.set_state`, the `alert` topic
and `system.health` while something is halted automatically."""

from __future__ import annotations

import time

import zmq

from .replies import error, ok
from .test_risk_ops import order
from .test_trading_ops import _frames_until, signal

FLAT = [[("TESTUSDT", "100.00", "100.20")]] * 6
#: flat, then a fall of 6 %
FALL = [[("TESTUSDT", "100.00", "100.20")]] * 2 + [[("TESTUSDT", "94.00", "94.20")]] * 4


def create(r, profile_id="p", allocated="10000", **more) -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated,
                                    **more}))


def flatten(r, **args) -> dict:
    return r.request("flatten", {"client_request_id": "f-1", **args})


def subscribe(server, *prefixes: bytes):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(server.events_endpoint)
    for prefix in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    time.sleep(0.2)  # let the subscription reach the server
    return ctx, sub


def test_flatten_a_profile_through_the_wire(market):
    server, r = market(FLAT)
    ctx, sub = subscribe(server, b"alert")
    try:
        create(r)
        create(r, "q")
        server.system.advance(1)
        a = ok(signal(r, price="100.20", qty="2"))
        ok(signal(r, "q", price="100.20", qty="1"))
        rest = ok(order(r, "rest", price="90"))
        server.system.advance(1)

        res = ok(flatten(r, scope="profile", profile_id="p", reason="drill"))
        assert (res["scope"], res["target"], res["state"], res["reused"]) == (
            "profile", "p", "HALTED", False)
        assert [x["position_id"] for x in res["positions_closed"]] == [a["position_id"]]
        assert [x["order_id"] for x in res["orders_canceled"]] == [rest["order_id"]]
        # the same key: the same answer, nothing done again
        again = ok(flatten(r, scope="profile", profile_id="p", reason="drill"))
        assert again == {**res, "reused": True}
        details = error(flatten(r, scope="all"), "CONFLICT")
        assert details["client_request_id"] == "f-1"

        server.system.advance(1)
        [pos] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
        assert (pos["status"], pos["close_reason"]) == ("CLOSED", "flatten")
        assert ok(r.request("profile.get", {"profile_id": "p"}))["state"] == "HALTED"
        denied = ok(signal(r, price="100.20", qty="1"))
        assert denied["risk_reason"] == "TRADING_HALTED"
        # another profile trades on
        assert ok(signal(r, "q", price="100.20", qty="1"))["risk_ok"] is True

        seen = _frames_until(sub, lambda topic, body: body.get("kind") == "flatten")
        topic, alert = seen[-1]
        assert (topic, alert["type"], alert["scope"], alert["target"]) == (
            "alert", "Alert", "profile", "p")
        assert alert["details"]["positions_closed"] == 1
    finally:
        sub.close(0)
        ctx.term()


def test_flatten_arguments_are_checked(market):
    _server, r = market(FLAT)
    create(r)
    assert error(flatten(r, scope="profile"), "INVALID_ARGUMENT")["field"] == "profile_id"
    assert error(flatten(r, scope="account"), "INVALID_ARGUMENT")["field"] == "account_id"
    assert error(flatten(r, scope="all", profile_id="p"),
                 "INVALID_ARGUMENT")["field"] == "profile_id"
    assert error(flatten(r, scope="galaxy"), "INVALID_ARGUMENT")["field"] == "scope"
    assert error(flatten(r, scope="profile", profile_id="nope"), "NOT_FOUND")["kind"] == (
        "profile")
    assert error(flatten(r, scope="account", account_id="nope"), "NOT_FOUND")["kind"] == (
        "account")
    details = error(r.request("flatten", {"scope": "all"}), "INVALID_ARGUMENT")
    assert details["field"] == "client_request_id"
    # nothing was halted by any of these
    assert ok(r.request("profile.get", {"profile_id": "p"}))["state"] == "ACTIVE"
    assert ok(r.request("system.health"))["trading_state"] == "ACTIVE"


def test_account_set_state_halts_every_profile_of_the_account(market):
    server, r = market(FLAT)
    create(r)
    server.system.advance(1)
    rest = ok(order(r, "rest", price="90"))
    res = ok(r.request("account.set_state", {"account_id": "paper", "state": "HALTED",
                                             "reason": "venue incident"}))
    assert (res["account_id"], res["state"], res["reason"]) == (
        "paper", "HALTED", "venue incident")
    got = ok(r.request("order.get", {"profile_id": "p", "order_id": rest["order_id"]}))
    assert got["status"] == "CANCELED"
    denied = ok(signal(r, price="100.20", qty="1"))
    assert denied["risk_reason"] == "TRADING_HALTED"
    details = error(order(r, "o2", price="90"), "RISK_REJECTED")
    assert (details["reason"], details["scope"]) == ("TRADING_HALTED", "account")
    # halted by hand: not degraded
    assert ok(r.request("system.health"))["status"] == "ok"
    ok(r.request("account.set_state", {"account_id": "paper", "state": "ACTIVE"}))
    assert ok(signal(r, price="100.20", qty="1"))["risk_ok"] is True
    assert error(r.request("account.set_state", {"account_id": "nope", "state": "HALTED"}),
                 "NOT_FOUND")["kind"] == "account"
    assert error(r.request("account.set_state", {"account_id": "paper", "state": "PAUSED"}),
                 "INVALID_ARGUMENT")["field"] == "state"


def test_health_is_degraded_while_an_account_is_halted_automatically(market):
    server, r = market(FALL, risk={"mark_interval_s": 0,
                                   "accounts": {"paper": {"daily_loss_limit": "50"}}})
    ctx, sub = subscribe(server, b"alert")
    try:
        create(r)
        server.system.advance(1)
        ok(order(r, "in", qty="10", price="100.20"))
        server.system.advance(2)  # filled at 100.20, then marked at 94.10: -61.00 - fee
        health = ok(r.request("system.health"))
        assert health["status"] == "degraded"
        [reason] = health["reasons"]
        assert reason.startswith("account paper is HALTED: DAILY_LOSS_LIMIT")
        seen = _frames_until(sub, lambda topic, body: body.get("kind") == "account_halted")
        assert seen[-1][1]["target"] == "paper"
        ok(r.request("account.set_state", {"account_id": "paper", "state": "ACTIVE",
                                           "reason": "reviewed"}))
        health = ok(r.request("system.health"))
        assert (health["status"], health["reasons"]) == ("ok", [])
    finally:
        sub.close(0)
        ctx.term()
