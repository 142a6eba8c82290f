"""What clients send, taken at its word and no further, through the wire: symbols (a
market only for an accepted order, names checked, their number capped), numbers (plain
ASCII decimals only), what the audit log records, and the order list's status filter."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import pytest

from .replies import error, ok
from .test_risk_ops import check_of, order, rejected, risk_check
from .test_trading_ops import ledger, signal

FLAT = [[("TESTUSDT", "100.00", "100.20")]] * 4


def create(r, allocated="10000", profile_id="p") -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated}))


def _price(r, symbol: str) -> dict:
    return r.request("market.price", {"symbol": symbol})


# -- symbols ---------------------------------------------------------------------------

def test_a_refused_signal_starts_no_market(market):
    server, r = market(FLAT)
    create(r, "10")
    server.system.advance(1)
    for i in range(20):  # 100 * 100 is far beyond 10 USDT
        res = ok(signal(r, symbol=f"NEW{i}USDT", qty="100", signal_id=f"s{i}"))
        assert (res["risk_ok"], res["risk_reason"]) == (False, "INSUFFICIENT_CAPITAL")
    server.system.advance(2)
    assert set(server.system.trading.board) == {"TESTUSDT"}
    error(_price(r, "NEW0USDT"), "NOT_FOUND")
    assert server.system.trading.symbols.count() == 1


def test_an_accepted_order_starts_the_market_of_a_new_symbol(market):
    server, r = market(FLAT)
    create(r)
    server.system.advance(1)
    res = ok(signal(r, symbol="FRESH/USDT", price="10", qty="1", signal_id="f1"))
    assert res["risk_ok"] is True
    server.system.advance(1)
    p = ok(_price(r, "FRESH/USDT"))
    assert p["last"] == "10.00"
    server.system.advance(1)
    [pos] = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    assert pos["symbol"] == "FRESH/USDT"


@pytest.mark.parametrize("symbol", ["BTC\x00USDT", "\U0001f4b0USDT", "BTC USDT", "BTC\n",
                                    "x" * 65, "", "BTC;DROP"])
def test_symbol_names_are_checked_on_every_op(market, symbol):
    server, r = market(FLAT)
    create(r)
    for reply in (signal(r, symbol=symbol, qty="1"),
                  order(r, "o1", symbol=symbol),
                  r.request("allocation.quote", {"profile_id": "p", "symbol": symbol}),
                  r.request("allocation.reserve", {"profile_id": "p", "symbol": symbol,
                                                   "amount": "10",
                                                   "client_request_id": "k"}),
                  r.request("risk.check", {"profile_id": "p", "symbol": symbol,
                                           "side": "BUY", "price": "1", "qty": "1"}),
                  _price(r, symbol)):
        assert error(reply, "INVALID_ARGUMENT")["field"] == "symbol"
    assert server.system.trading.symbols.count() == 0  # nothing ticked yet, nothing added


def test_the_number_of_simulated_symbols_is_capped(market):
    server, r = market(FLAT, simulator={"max_symbols": 2})
    create(r)
    server.system.advance(1)  # TESTUSDT: 1 of 2
    assert ok(signal(r, symbol="AUSDT", price="10", qty="1"))["risk_ok"] is True  # 2 of 2
    res = ok(signal(r, symbol="BUSDT", price="10", qty="1", signal_id="b1"))
    assert (res["risk_ok"], res["risk_reason"]) == (False, "UNKNOWN_SYMBOL")
    # a repeat answers the same, and an order is refused with the same reason
    assert ok(signal(r, symbol="BUSDT", price="10", qty="1", signal_id="b1"))["reused"]
    rejected(order(r, "o1", symbol="BUSDT", price="10"), "UNKNOWN_SYMBOL", 2, 2)
    c = check_of(risk_check(r, symbol="BUSDT", price="10", qty="1"), "market")
    assert (c["ok"], c["code"]) == (False, "UNKNOWN_SYMBOL")
    # known symbols still trade
    assert ok(signal(r, symbol="AUSDT", price="10", qty="1"))["risk_ok"] is True
    server.system.advance(1)
    assert set(server.system.trading.board) == {"TESTUSDT", "AUSDT"}


def test_new_symbols_can_be_turned_off(market):
    server, r = market(FLAT, simulator={"new_symbols": False})
    create(r)
    server.system.advance(1)
    res = ok(signal(r, symbol="AUSDT", price="10", qty="1"))
    assert (res["risk_ok"], res["risk_reason"]) == (False, "UNKNOWN_SYMBOL")
    assert ok(signal(r, price="100.20", qty="1"))["risk_ok"] is True


# -- numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("amount", ["1_000", "\uff11\uff10\uff10\uff10",
                                    "\u0661\u0660\u0660\u0660", " 1000", "1000 ", "1e",
                                    "0x10", "1,000", "NaN", "Infinity", "+-1"])
def test_money_is_plain_ascii_decimal_text(market, amount):
    _server, r = market(FLAT)
    create(r)
    before = ledger(r)
    details = error(r.request("ledger.deposit", {"profile_id": "p", "amount": amount,
                                                 "client_request_id": "d1"}),
                    "INVALID_ARGUMENT")
    assert details["field"] == "amount"
    assert ledger(r) == before


def test_plain_numbers_with_an_exponent_are_read(market):
    _server, r = market(FLAT)
    create(r)
    ok(r.request("ledger.deposit", {"profile_id": "p", "amount": "1e3",
                                    "client_request_id": "d1"}))
    ok(r.request("ledger.deposit", {"profile_id": "p", "amount": "+0.50",
                                    "client_request_id": "d2"}))
    assert ledger(r)["allocated"] == "11000.50"


# -- the audit log -----------------------------------------------------------------------

def test_the_audit_log_records_a_nan_timestamp_as_sent(market, tmp_path):
    server, r = market(FLAT)
    create(r)
    r.request("signal.submit", {"profile_id": "p", "symbol": "TESTUSDT", "side": "BUY",
                                "price": "100", "timestamp": math.nan, "qty": "1"})
    r.request("signal.submit", {"profile_id": "p", "symbol": "TESTUSDT", "side": "BUY",
                                "price": "100", "timestamp": -math.inf, "qty": "1"})
    path = server.system.config.oms.audit_log
    server.system.trading.audit.close()
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert [x["signal"]["timestamp"] for x in lines[-2:]] == ["nan", "-inf"]


# -- order.list ------------------------------------------------------------------------

def test_order_list_status_closed_lists_every_order_no_longer_working(market):
    server, r = market(FLAT)
    create(r)
    server.system.advance(1)
    resting = ok(order(r, "rest", price="90"))  # below the ask: it rests
    filled = ok(order(r, "fill", price="101"))  # crosses the ask 100.20
    canceled = ok(order(r, "gone", price="80"))
    ok(r.request("order.cancel", {"profile_id": "p", "order_id": canceled["order_id"]}))
    server.system.advance(1)

    def ids(status):
        found = ok(r.request("order.list", {"profile_id": "p", "status": status}))
        return {o["order_id"] for o in found["orders"]}

    assert ids("closed") == {filled["order_id"], canceled["order_id"]}
    assert ids("OPEN") == {resting["order_id"]}
    assert error(r.request("order.list", {"profile_id": "p", "status": "DONE"}),
                 "INVALID_ARGUMENT")["field"] == "status"


# -- the market from the start -----------------------------------------------------------

def test_the_market_answers_its_configured_price_before_its_first_tick(live, raw):
    server = live(simulator={"symbols": {"BTCUSDT": {"price": "65000"}}})
    r = raw(server.endpoint)
    p = ok(r.request("market.price", {"symbol": "BTCUSDT"}))
    assert (p["last"], p["seq"]) == ("65000.00", 0)
    assert Decimal(p["bid"]) < Decimal("65000") < Decimal(p["ask"])
    # so an order without a price is reserved at it, and a signal says what comes next
    create(r)
    res = ok(signal(r, symbol="BTCUSDT", price="65000", qty="0.01"))
    assert res["risk_ok"] is True
    assert res["note"] == (f"order {res['order_id']} is working; position "
                           f"{res['position_id']} opens when it fills (order.get, "
                           "position.list)")
    assert ok(r.request("position.list", {"profile_id": "p"}))["positions"] == []
    [o] = ok(r.request("order.list", {"profile_id": "p"}))["orders"]
    assert o["status"] == "OPEN"
