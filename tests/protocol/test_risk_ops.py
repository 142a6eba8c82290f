"""Pre-trade risk through the wire: one test per reason code, each met by a signal
(``risk_ok: false`` and ``risk_reason``) and, where an order can meet it, by
``order.submit`` (a ``RISK_REJECTED`` error whose details carry ``reason``, ``limit`` and
``value``); then the risk ops ``risk.check``, ``risk.reset``, ``system.set_state`` and the
environment names bots already use.

The market is the replayed CSV of test_trading_ops.py in step mode (TESTUSDT at 100.00 /
100.20 unless a test moves it); the paper broker's fees: taker 0.1 %, maker 0.05 %, no
slippage. A signal is a MARKET order reserving qty * price * 1.01 * 1.001 (rounded up to
the cent); a LIMIT order qty * limit * 1.0005. Every profile has 10000 allocated (claimed
from the paper account's 1,000,000), so equity is 10000.00 until something fills. The
server runs on the real clock (`live` passes no clock), which matters only for the order
bucket (a rate of 0.001 a minute refills nothing during a test) and the daily period.
"""

from __future__ import annotations

import time

import pytest
import zmq
from sqlalchemy import select

from capflow.actors.config import load_config
from capflow.actors.model.settings import ConfigError
from capflow.storage import schema as s

from .market import SETTINGS, write_ticks
from .replies import error, ok
from .test_trading_ops import SIGNAL_KEYS, _frames_until, signal

FLAT = [[("TESTUSDT", "100.00", "100.20"), ("OTHERUSDT", "50.00", "50.10")]] * 4
#: T1: the entry fills at the ask 100.20; T2..: the market falls to 98.00 / 98.20 (mark:
#: the mid 98.10)
FALLING = [[("TESTUSDT", "100.00", "100.20")]] + [[("TESTUSDT", "98.00", "98.20")]] * 3


@pytest.fixture
def market(live, raw, tmp_path):
    """A server replaying `steps` (default `FLAT`) with the fees above, and any config
    sections (``risk={...}``); returns (server, raw socket)."""

    def start(steps=None, **sections):
        replay = write_ticks(tmp_path / "ticks.csv", steps or FLAT)
        sections.setdefault("brokers", {"accounts": {"paper": {"settings": SETTINGS}}})
        server = live(simulator={"replay": replay, "symbols": {}}, **sections)
        return server, raw(server.endpoint)

    return start


def create(r, profile_id="p", allocated="10000", **more) -> dict:
    return ok(r.request("profile.create", {"profile_id": profile_id,
                                           "allocated": allocated, **more}))


def denied(reply: dict, reason: str) -> dict:
    """A signal answered ok with risk_ok false and `reason`, and no order."""
    res = ok(reply)
    assert set(res) >= SIGNAL_KEYS
    assert (res["received"], res["oms_enabled"], res["risk_ok"], res["risk_reason"]) == (
        True, True, False, reason), res
    assert (res["order_id"], res["position_id"]) == (None, None)
    return res


def accepted(reply: dict) -> dict:
    res = ok(reply)
    assert (res["risk_ok"], res["risk_reason"]) == (True, None), res
    assert res["order_id"].startswith("ord_")
    return res


def order(r, client_order_id, *, profile_id="p", symbol="TESTUSDT", side="BUY",
          type="LIMIT", qty="1", price="100", **more) -> dict:
    args = {"profile_id": profile_id, "client_order_id": client_order_id, "symbol": symbol,
            "side": side, "type": type, "qty": qty, **more}
    if price is not None:
        args["price"] = price
    return r.request("order.submit", args)


def rejected(reply: dict, reason: str, limit, value) -> dict:
    """An order refused RISK_REJECTED with `reason`, `limit` and `value`."""
    details = error(reply, "RISK_REJECTED")
    assert (details["reason"], details["limit"], details["value"]) == (
        reason, limit, value), details
    return details


def book(r, profile_id="p") -> tuple:
    """What must not change: the ledger, the orders and the positions."""
    return (ok(r.request("ledger.get", {"profile_id": profile_id})),
            ok(r.request("order.list", {"profile_id": profile_id})),
            ok(r.request("position.list", {"profile_id": profile_id})))


def risk_check(r, profile_id="p", symbol="TESTUSDT", side="BUY", price="100", **more):
    return ok(r.request("risk.check", {"profile_id": profile_id, "symbol": symbol,
                                       "side": side, "price": price, **more}))


def check_of(result: dict, name: str) -> dict:
    [found] = [c for c in result["checks"] if c["check"] == name]
    return found


# -- open positions -----------------------------------------------------------------------

def test_max_open_positions(market):
    _server, r = market(risk={"limits": {"max_open_positions": 1}})
    create(r)
    a = accepted(signal(r, qty="1"))
    # the working entry order counts as the one open position: one more would be 2 > 1
    denied(signal(r, symbol="OTHERUSDT", price="50", qty="1"), "MAX_OPEN_POSITIONS")
    details = rejected(order(r, "o1", price="90"), "MAX_OPEN_POSITIONS", 1, 2)
    assert details["check"] == "max_open_positions"
    # the order ended without a fill: its slot is free again
    ok(r.request("order.cancel", {"profile_id": "p", "order_id": a["order_id"]}))
    accepted(signal(r, symbol="OTHERUSDT", price="50", qty="1"))


def test_max_open_positions_per_symbol_is_per_profile(market):
    # only p is limited ([risk.overrides.p]); q has no limit
    _server, r = market(risk={"overrides": {"p": {"max_open_positions_per_symbol": 1}}})
    create(r)
    create(r, "q")
    accepted(signal(r, qty="1"))
    accepted(signal(r, symbol="OTHERUSDT", price="50", qty="1"))  # another symbol
    # a second TESTUSDT position: 1 + 1 = 2 > 1
    denied(signal(r, qty="1"), "MAX_OPEN_POSITIONS_PER_SYMBOL")
    rejected(order(r, "o1", price="90"), "MAX_OPEN_POSITIONS_PER_SYMBOL", 1, 2)
    for _ in range(3):
        accepted(signal(r, "q", qty="1"))
    assert ok(r.request("profile.get", {"profile_id": "q"}))["risk"]["limits"] == {}


def test_max_open_positions_across_the_profiles_of_an_account(market):
    # two profiles on the paper account (10000 each of its 1,000,000), one slot in all
    _server, r = market(risk={"accounts": {"paper": {"max_open_positions": 1}}})
    create(r)
    create(r, "q")
    accepted(signal(r, qty="1"))
    # q has no position of its own; the account holds p's entry order: 1 + 1 = 2 > 1
    denied(signal(r, "q", qty="1"), "MAX_OPEN_POSITIONS")
    details = rejected(order(r, "o1", profile_id="q", price="90"), "MAX_OPEN_POSITIONS",
                       1, 2)
    assert (details["scope"], details["account_id"], details["check"]) == (
        "account", "paper", "account_max_open_positions")
    res = risk_check(r, "q", qty="1")
    assert (res["allowed"], res["reason"], res["account_id"]) == (
        False, "MAX_OPEN_POSITIONS", "paper")
    c = check_of(res, "account_max_open_positions")
    assert (c["code"], c["ok"], c["limit"], c["value"], c["headroom"]) == (
        "MAX_OPEN_POSITIONS", False, 1, 2, -1)
    # nothing was placed for q, and p's order is still the only one
    assert ok(r.request("order.list", {"profile_id": "q"}))["orders"] == []
    [a] = ok(r.request("order.list", {"profile_id": "p"}))["orders"]
    # p's order ends without a fill: the account's slot is free for q
    ok(r.request("order.cancel", {"profile_id": "p", "order_id": a["order_id"]}))
    accepted(signal(r, "q", qty="1"))
    denied(signal(r, qty="1"), "MAX_OPEN_POSITIONS")


def test_repeated_order_on_a_full_account_is_the_same_order(market):
    _server, r = market(risk={"accounts": {"paper": {"max_open_positions": 1}}})
    create(r)
    first = ok(order(r, "o1", price="90"))
    again = ok(order(r, "o1", price="90"))
    assert (again["order_id"], again["reused"]) == (first["order_id"], True)


# -- sizes --------------------------------------------------------------------------------

def test_max_notional(market):
    _server, r = market(risk={"limits": {"max_notional": "500"}})
    create(r)
    accepted(signal(r, qty="5"))  # 5 * 100 = 500: at the limit is allowed
    denied(signal(r, qty="5.01"), "MAX_NOTIONAL")  # 501 > 500
    # LIMIT 6 @ 90 = 540 > 500
    details = rejected(order(r, "o1", qty="6", price="90"), "MAX_NOTIONAL", "500", "540")
    assert details["check"] == "max_notional"


def test_min_notional(market):
    _server, r = market(risk={"limits": {"min_notional": "50"}})
    create(r)
    denied(signal(r, qty="0.4"), "MIN_NOTIONAL")  # 0.4 * 100 = 40 < 50
    accepted(signal(r, qty="0.5"))  # 50: at the minimum is allowed
    rejected(order(r, "o1", qty="0.4", price="100"), "MIN_NOTIONAL", "50", "40.0")


def test_max_exposure_and_max_leverage(market):
    # p: at most 3000 open; q: at most 0.2 x its equity 10000 = 2000
    _server, r = market(risk={"overrides": {"p": {"max_exposure": "3000"},
                                            "q": {"max_leverage": "0.2"}}})
    create(r)
    create(r, "q")
    # p: 0 + 20 * 100 = 2000 <= 3000; the working order counts at its notional
    accepted(signal(r, qty="20"))
    # 2000 + 10.01 * 100 = 3001 > 3000
    denied(signal(r, qty="10.01"), "MAX_EXPOSURE")
    details = rejected(order(r, "o1", qty="10.01", price="100"), "MAX_EXPOSURE", "3000",
                       "3001.00")
    assert details["check"] == "max_exposure"
    # 2000 + 10 * 100 = 3000 <= 3000: at the limit is allowed
    ok(order(r, "o2", qty="10", price="100"))

    # q: 0 + 20 * 100 = 2000 <= 2000
    accepted(signal(r, "q", qty="20"))
    denied(signal(r, "q", qty="0.01"), "MAX_EXPOSURE")  # 2000 + 1 = 2001 > 2000
    # the cap is equity * leverage = 10000.00 * 0.2 = 2000.000; 2000 + 100 = 2100
    rejected(order(r, "o1", profile_id="q", qty="1", price="100"), "MAX_EXPOSURE",
             "2000.000", "2100")


def test_max_exposure_counts_working_orders_at_their_notional(market):
    _server, r = market(risk={"limits": {"max_exposure": "1000"}})
    create(r)
    accepted(signal(r, qty="5"))  # notional 500 (reserves 505.51)
    # by notional 500 + 500 = 1000 <= 1000; the product counts 505.51 + 500 = 1005.51
    accepted(signal(r, qty="5"))


def test_max_risk_per_trade_of_the_atlas_preset(market):
    _server, r = market()
    p = create(r, risk_profile="atlas")
    assert p["risk"]["limits"] == {"max_risk_per_trade_pct": "2", "daily_loss_limit_pct": "1",
                                   "max_drawdown_pct": "5", "max_leverage": "1"}
    # sl 5 % -> 95.00: 50 * |100 - 95| = 250 at risk, 250 / 10000 = 2.5 % > 2 %
    denied(signal(r, qty="50", sl_pct="5"), "MAX_RISK_PER_TRADE")
    # 40 * 5 = 200 -> 2 %: at the limit is allowed (reserves 40 * 100 * 1.01101 = 4044.04)
    a = accepted(signal(r, qty="40", sl_pct="5"))
    assert a["sl_price"] == "95.00"
    # LIMIT 30 @ 100 with a stop at 90: 30 * 10 = 300 -> 3 %
    rejected(order(r, "o1", qty="30", price="100", sl_price="90"), "MAX_RISK_PER_TRADE",
             "2", "3.0000")
    # without a stop the whole notional is at risk: 2.5 * 100 = 250 -> 2.5 %
    rejected(order(r, "o2", qty="2.5", price="100"), "MAX_RISK_PER_TRADE", "2", "2.5000")
    ok(order(r, "o3", qty="2", price="100"))  # 200 -> 2 %


# -- symbols --------------------------------------------------------------------------------

def test_symbol_not_allowed_by_an_allowed_list(market):
    _server, r = market(risk={"overrides": {"p": {"allowed_symbols": ["TESTUSDT"]}}})
    create(r)
    denied(signal(r, symbol="OTHERUSDT", price="50", qty="1"), "SYMBOL_NOT_ALLOWED")
    rejected(order(r, "o1", symbol="OTHERUSDT", price="50"), "SYMBOL_NOT_ALLOWED",
             {"allowed": ["TESTUSDT"], "denied": []}, "OTHERUSDT")
    accepted(signal(r, qty="1"))


def test_symbol_not_allowed_by_a_denied_list_of_a_custom_risk_profile(market):
    # a custom risk profile on top of the orion preset
    _server, r = market(risk={"profiles": {"strict": {"base": "orion",
                                                      "denied_symbols": ["OTHERUSDT"]}}})
    details = error(r.request("profile.create", {"profile_id": "p", "allocated": "10000",
                                                 "risk_profile": "nope"}),
                    "INVALID_ARGUMENT")
    assert details["field"] == "risk_profile"
    p = create(r, risk_profile="strict")
    assert (p["risk_profile"], p["risk"]["limits"]) == ("strict", {
        "max_risk_per_trade_pct": "3", "weekly_loss_limit_pct": "5", "max_drawdown_pct": "10",
        "max_leverage": "1", "denied_symbols": ["OTHERUSDT"]})
    denied(signal(r, symbol="OTHERUSDT", price="50", qty="1"), "SYMBOL_NOT_ALLOWED")
    rejected(order(r, "o1", symbol="OTHERUSDT", price="50"), "SYMBOL_NOT_ALLOWED",
             {"allowed": None, "denied": ["OTHERUSDT"]}, "OTHERUSDT")
    accepted(signal(r, qty="1"))


# -- the order rate ---------------------------------------------------------------------------

def test_order_rate(market):
    # a bucket of 2 tokens refilled at 0.001 a minute: nothing comes back during the test
    _server, r = market(risk={"limits": {"order_rate_per_min": "0.001", "order_burst": 2}})
    create(r)
    accepted(signal(r, qty="1"))
    ok(order(r, "o1", price="90"))
    # the third order in the same instant: about 0 tokens left (< 1)
    denied(signal(r, qty="1"), "ORDER_RATE")
    details = rejected(order(r, "o2", price="90"), "ORDER_RATE", "0.001", "0.000")
    assert details["check"] == "order_rate"
    # a denied order took no token, and a repeated order is not a new one
    assert ok(order(r, "o1", price="90"))["reused"] is True
    assert len(ok(r.request("order.list", {"profile_id": "p"}))["orders"]) == 2


# -- trading states: the profile's own and the global kill switch ------------------------------

@pytest.mark.parametrize(("scope", "state", "code"), [
    ("profile", "HALTED", "TRADING_HALTED"),
    ("profile", "REDUCE_ONLY", "REDUCE_ONLY"),
    ("global", "HALTED", "TRADING_HALTED"),
    ("global", "REDUCE_ONLY", "REDUCE_ONLY"),
])
def test_trading_state_blocks_entries_and_lets_exits_through(market, scope, state, code):
    server, r = market()
    create(r)
    a = accepted(signal(r, qty="1"))
    server.system.advance(1)  # T1: the entry fills at the ask 100.20
    [pos] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    assert (pos["position_id"], pos["status"], pos["entry_price"]) == (
        a["position_id"], "OPEN", "100.20")

    if scope == "profile":
        res = ok(r.request("profile.set_state", {"profile_id": "p", "state": state}))
        assert res["state"] == state
    else:
        ok(r.request("system.set_state", {"state": state, "reason": "test"}))
        # the profile's own state is untouched: the stricter of the two applies
        assert ok(r.request("ledger.get", {"profile_id": "p"}))["state"] == "ACTIVE"
    denied(signal(r, qty="1"), code)
    details = rejected(order(r, "o1", price="90"), code, "ACTIVE", state)
    assert details["scope"] == scope
    c = check_of(risk_check(r, qty="1"), "trading_state")
    assert (c["code"], c["ok"], c["value"]) == (
        code, False, state if scope == "profile" else f"{state} (global)")

    # an exit reduces risk: the close goes through, booked at the next tick's bid 100.00
    closing = ok(r.request("position.close", {"profile_id": "p",
                                              "position_id": a["position_id"]}))
    assert closing["close_requested"] is True
    server.system.advance(1)  # T2
    [pos] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    # pnl 100.00 - 100.20 = -0.20; fees 0.1002 -> 0.11 and 0.10
    assert (pos["status"], pos["close_reason"], pos["exit_price"], pos["realized_pnl"]) == (
        "CLOSED", "manual", "100.00", "-0.20")
    assert ok(r.request("ledger.get", {"profile_id": "p"}))["reserved_for_positions"] == (
        "0.00")


def test_system_set_state_answers_and_health_reports_it(market):
    _server, r = market()
    create(r)
    assert ok(r.request("system.health"))["trading_state"] == "ACTIVE"
    gs = ok(r.request("system.set_state", {"state": "HALTED", "reason": "exchange outage"}))
    assert (gs["state"], gs["reason"], gs["changed_by"]) == ("HALTED", "exchange outage",
                                                             "wire")
    assert gs["changed_at"].endswith("+00:00")
    assert ok(r.request("system.health"))["trading_state"] == "HALTED"
    denied(signal(r, qty="1"), "TRADING_HALTED")
    # a profile's ACTIVE does not beat the global halt
    ok(r.request("profile.set_state", {"profile_id": "p", "state": "ACTIVE"}))
    denied(signal(r, qty="1"), "TRADING_HALTED")

    details = error(r.request("system.set_state", {"state": "PAUSED"}), "INVALID_ARGUMENT")
    assert details["field"] == "state"
    assert ok(r.request("system.health"))["trading_state"] == "HALTED"

    gs = ok(r.request("system.set_state", {"state": "ACTIVE"}))
    assert (gs["state"], gs["reason"]) == ("ACTIVE", "")
    assert ok(r.request("system.health"))["trading_state"] == "ACTIVE"
    accepted(signal(r, qty="1"))


# -- drawdown breakers ------------------------------------------------------------------------

def _open_and_fall(server, r) -> None:
    """Open 50 TESTUSDT and let the market fall to a mark of 98.10.

    The entry fills at 100.20: 5010.00, fee 5.01. At the mark 98.10 the position is worth
    4905.00: unrealized -105.00, equity 10000 - 5.01 - 105.00 = 9889.99; the loss from
    the reference 10000.00 (the equity at the first entry of the day, and the high-water
    mark) is 110.01 / 10000 = 1.1001 %."""
    # sl 5 % -> 95.00, not reached by the bid 98.00
    accepted(signal(r, qty="50", sl_pct="5"))
    server.system.advance(2)
    [pos] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    assert (pos["status"], pos["entry_notional"], pos["fees"]) == ("OPEN", "5010.00", "5.01")


def _journal_types(server, profile_id="p") -> list[str]:
    with server.system.engine.connect() as c:
        rows = c.execute(select(s.ledger_journal.c.type)
                         .where(s.ledger_journal.c.profile_id == profile_id)
                         .order_by(s.ledger_journal.c.seq))
        return [t for (t,) in rows]


def test_drawdown_daily(market):
    server, r = market(FALLING, risk={"limits": {"daily_loss_limit_pct": "1"}})
    create(r)
    _open_and_fall(server, r)
    denied(signal(r, qty="1"), "DRAWDOWN_DAILY")  # 1.1001 % >= 1 %
    details = rejected(order(r, "o1", price="90"), "DRAWDOWN_DAILY", "1", "1.1001")
    assert details["until"].endswith("T00:00:00.000000+00:00")  # the next UTC midnight
    assert "BreakerTripped" in _journal_types(server)

    risk = ok(r.request("profile.get", {"profile_id": "p"}))["risk"]
    daily = risk["breakers"]["daily"]
    assert (daily["code"], daily["tripped"], daily["loss_pct"], daily["limit_pct"]) == (
        "DRAWDOWN_DAILY", True, "1.1001", "1")
    assert daily["until"] == details["until"]
    assert risk["equity"] == "9889.99"  # 10000.00 - 5.01 + 50 * 98.10 - 5010.00

    # risk.check shows the breaker too
    res = risk_check(r, qty="1")
    assert (res["allowed"], res["reason"]) == (False, "DRAWDOWN_DAILY")
    c = check_of(res, "drawdown_daily")
    assert (c["ok"], c["limit"], c["value"]) == (False, "1", "1.1001")

    # reset by hand (every tripped breaker): the day's baseline restarts at 9889.99
    [reset] = ok(r.request("risk.reset", {"profile_id": "p"}))["reset"]
    assert (reset["breaker"], reset["code"]) == ("daily", "DRAWDOWN_DAILY")
    # at the market's price now: from 100 the default 1 % stop (99.00) would already be
    # crossed by the bid 98.00 (TP_SL_CROSSED)
    accepted(signal(r, qty="1", price="98.20"))


def test_breaker_trip_and_reset_are_published_on_the_risk_topic(market):
    server, r = market(FALLING, risk={"limits": {"daily_loss_limit_pct": "1"}})
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(server.events_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"risk.")
        time.sleep(0.2)  # let the subscription reach the server
        create(r)
        _open_and_fall(server, r)
        denied(signal(r, qty="1"), "DRAWDOWN_DAILY")
        topic, body = _frames_until(sub, lambda t, b: b["type"] == "BreakerTripped")[-1]
        assert topic == "risk.p"
        trip = body["trip"]
        assert (body["profile_id"], trip["kind"], trip["code"], trip["loss_pct"],
                trip["limit_pct"], trip["equity"], trip["reference"]) == (
            "p", "daily", "DRAWDOWN_DAILY", "1.1001", "1", "9889.99", "10000.00")

        ok(r.request("risk.reset", {"profile_id": "p", "reason": "reviewed"}))
        topic, body = _frames_until(sub, lambda t, b: b["type"] == "BreakerReset")[-1]
        assert (topic, body["trip"]["code"], body["reset_by"], body["reason"]) == (
            "risk.p", "DRAWDOWN_DAILY", "wire", "reviewed")
    finally:
        sub.close(0)
        ctx.term()


def test_risk_reset_lets_entries_through_again(market):
    server, r = market(FALLING, risk={"limits": {"max_drawdown_pct": "1"}})
    create(r)
    _open_and_fall(server, r)
    denied(signal(r, qty="1"), "MAX_DRAWDOWN")  # 1.1001 % below the high-water mark
    rejected(order(r, "o1", price="90"), "MAX_DRAWDOWN", "1", "1.1001")
    assert ok(r.request("profile.get", {"profile_id": "p"}))["risk"]["breakers"]["max"][
        "until"] is None  # only by hand

    details = error(r.request("risk.reset", {"profile_id": "p", "breakers": ["hourly"]}),
                    "INVALID_ARGUMENT")
    assert details["field"] == "breakers"
    res = ok(r.request("risk.reset", {"profile_id": "p", "breakers": ["max"],
                                      "reason": "reviewed"}))
    assert res["profile_id"] == "p"
    [reset] = res["reset"]
    assert (reset["breaker"], reset["code"], reset["loss_pct"], reset["limit_pct"]) == (
        "max", "MAX_DRAWDOWN", "1.1001", "1")
    assert "BreakerReset" in _journal_types(server)
    # the high-water mark restarts at the equity now, 9889.99: no loss from there
    risk = ok(r.request("profile.get", {"profile_id": "p"}))["risk"]
    assert (risk["breakers"]["max"]["tripped"], risk["breakers"]["max"]["loss_pct"]) == (
        False, "0.0000")
    accepted(signal(r, qty="1", price="98.20"))  # at the market (see test_drawdown_daily)
    ok(order(r, "o1", price="90"))
    # nothing is tripped any more
    assert ok(r.request("risk.reset", {"profile_id": "p"}))["reset"] == []


# -- risk.check ----------------------------------------------------------------------------------

def test_risk_check_runs_every_check_and_changes_nothing(market):
    _server, r = market(risk={"limits": {"max_notional": "500", "order_rate_per_min": "0.001",
                                         "order_burst": 1}})
    create(r)
    before = book(r)

    # 10 @ 100 = 1000 > 500; it would reserve 10 * 100 * 1.01101 = 1011.01
    res = risk_check(r, qty="10", sl_pct="2")
    assert (res["profile_id"], res["account_id"], res["allowed"], res["reason"]) == (
        "p", "paper", False, "MAX_NOTIONAL")
    assert (res["qty"], res["notional"], res["amount"], res["sl_price"]) == (
        "10", "1000", "1011.01", "98.00")
    for c in res["checks"]:
        assert set(c) == {"check", "code", "ok", "limit", "value", "headroom"}
    assert [c["check"] for c in res["checks"]] == [
        "trading_state", "order_rate", "max_notional", "capital", "concentration_ticker"]
    c = check_of(res, "max_notional")
    assert (c["code"], c["ok"], c["limit"], c["value"], c["headroom"]) == (
        "MAX_NOTIONAL", False, "500", "1000", "-500")
    c = check_of(res, "order_rate")  # the one token of the bucket, not taken
    assert (c["code"], c["ok"], c["limit"], c["value"], c["headroom"]) == (
        "ORDER_RATE", True, "0.001", "1.000", "0.000")
    c = check_of(res, "capital")
    assert (c["code"], c["ok"], c["limit"], c["value"], c["headroom"]) == (
        "INSUFFICIENT_CAPITAL", True, "10000.00", "1011.01", "8988.99")

    # allowed: 2 @ 100 = 200, checked again and again
    for _ in range(3):
        res = risk_check(r, qty="2")
        assert (res["allowed"], res["reason"]) == (True, None)
        assert all(c["ok"] for c in res["checks"])
    assert book(r) == before

    # the token is still there for a real signal; then the bucket is empty
    accepted(signal(r, qty="2"))
    denied(signal(r, qty="2"), "ORDER_RATE")
    res = risk_check(r, qty="2")
    assert (res["allowed"], res["reason"]) == (False, "ORDER_RATE")


def test_risk_check_of_an_unknown_profile_or_without_a_price(market):
    _server, r = market()
    details = error(r.request("risk.check", {"profile_id": "ghost", "symbol": "TESTUSDT",
                                             "side": "BUY", "price": "100", "qty": "1"}),
                    "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("profile", "ghost")
    create(r)
    # no price and no tick yet
    details = error(r.request("risk.check", {"profile_id": "p", "symbol": "TESTUSDT",
                                             "side": "BUY", "qty": "1"}), "INVALID_ARGUMENT")
    assert details["field"] == "price"


# -- environment names bots use -------------------------------------------------------------------

def test_env_aliases(tmp_path, monkeypatch):
    from decimal import Decimal as D

    monkeypatch.chdir(tmp_path)  # no capflow.toml here
    cfg = load_config(env={"MAX_OPEN_POSITIONS": "3", "OMS_ENABLED": "false",
                           "MAX_SIZE_PER_POSITION_USDT": "500"})
    assert (cfg.risk.limits.max_open_positions, cfg.oms.enabled,
            cfg.risk.limits.max_notional) == (3, False, D("500"))
    cfg = load_config(env={"MAX_OPEN_POSITIONS": "3",
                           "CAPFLOW_RISK__LIMITS__MAX_OPEN_POSITIONS": "7"})
    assert cfg.risk.limits.max_open_positions == 7


@pytest.mark.parametrize(("text", "enabled"), [
    ("0", False), ("1", True), ("true", True), ("false", False), ("False", False),
    ("True", True),
])
def test_oms_enabled_reads_the_values_bots_send(tmp_path, monkeypatch, text, enabled):
    monkeypatch.chdir(tmp_path)
    assert load_config(env={"OMS_ENABLED": text}).oms.enabled is enabled


@pytest.mark.parametrize("text", ["yes", "no", "off", ""])
def test_oms_enabled_refuses_what_it_cannot_read(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        load_config(env={"OMS_ENABLED": text})


def test_env_amounts_keep_every_digit(tmp_path, monkeypatch):
    from decimal import Decimal as D

    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={"MAX_SIZE_PER_POSITION_USDT": "12345678901234567.25"})
    assert cfg.risk.limits.max_notional == D("12345678901234567.25")
