"""Entries priced away from the market, through the wire: capital is reserved at the worse
of the entry's price and the market's, the paper broker never fills an entry above the
price its capital covers, TP / SL that the market has crossed are refused, and the
allocation's concentration limits bind orders as they bind quotes.

The market is replayed (tests/protocol/market.py: taker 0.1 %, maker 0.05 %, no
slippage); a MARKET order reserves qty * price * 1.01 * 1.001, a LIMIT order
qty * price * 1.0005, rounded up to the cent. Every figure is computed in a comment.
"""

from __future__ import annotations

from .replies import error, ok
from .test_risk_ops import check_of, order, rejected, risk_check
from .test_trading_ops import ledger, signal

#: T1 100.00 / 100.20, then steady
FLAT = [[("TESTUSDT", "100.00", "100.20")]] * 4
#: T1 100.00 / 100.20, T2 a gap up to 110.00 / 110.20
GAP_UP = [[("TESTUSDT", "100.00", "100.20")], [("TESTUSDT", "110.00", "110.20")],
          [("TESTUSDT", "110.00", "110.20")]]


def create(r, allocated="1000", profile_id="p") -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated}))


def test_market_orders_priced_far_below_the_market_cannot_overspend(market):
    server, r = market(FLAT)
    create(r, "1000")
    server.system.advance(1)  # 100.00 / 100.20
    # 3 @ the ask 100.20 (not the price 1 it names): 3 * 100.20 * 1.01 * 1.001 = 303.9096...
    # -> 303.91, to be filled at most at 100.20 * 1.01 = 101.202 -> 101.20
    placed = [ok(order(r, f"m{i}", type="MARKET", qty="3", price="1")) for i in range(3)]
    assert {(o["reserved"], o["max_price"]) for o in placed} == {("303.91", "101.20")}
    assert ledger(r)["available"] == "88.27"  # 1000 - 3 * 303.91
    details = error(order(r, "m3", type="MARKET", qty="3", price="1"),
                    "INSUFFICIENT_CAPITAL")
    assert (details["requested"], details["available"]) == ("303.91", "88.27")

    server.system.advance(1)  # each fills at 100.20: 300.60, fee 0.3006 -> 0.31
    led = ledger(r)
    assert (led["reserved_for_orders"], led["reserved_for_positions"], led["fees"],
            led["available"], led["state"]) == ("0.00", "901.80", "0.93", "97.27", "ACTIVE")


def test_a_signal_far_from_the_market_is_refused_and_reserves_nothing(market):
    server, r = market(FLAT)
    create(r, "1000")
    server.system.advance(1)
    before = ledger(r)
    # from the price 1 its take-profit (1.02) and stop (0.99) are far below the bid 100.00:
    # the position would close at once, at a loss
    for i in range(4):
        res = ok(signal(r, price="1", qty="3", signal_id=f"s{i}"))
        assert (res["risk_ok"], res["risk_reason"], res["order_id"]) == (
            False, "TP_SL_CROSSED", None)
    assert ledger(r) == before
    # near the market it trades, reserved at the ask 100.20 rather than its price 95:
    # 3 * 100.20 * 1.01 * 1.001 -> 303.91 (at 95: 288.14)
    res = ok(signal(r, price="95", qty="3", tp_pct="10", sl_pct="10"))
    assert (res["risk_ok"], res["tp_price"], res["sl_price"]) == (True, "104.50", "85.50")
    assert ledger(r)["reserved_for_orders"] == "303.91"


def test_a_market_entry_is_canceled_rather_than_filled_above_its_reserved_price(market):
    server, r = market(GAP_UP)
    create(r, "10000")
    server.system.advance(1)  # 100.00 / 100.20
    o = ok(order(r, "m1", type="MARKET", qty="3", price=None))
    assert (o["reserved"], o["max_price"]) == ("303.91", "101.20")
    server.system.advance(1)  # the ask gaps to 110.20, beyond 101.20: nothing fills
    got = ok(r.request("order.get", {"profile_id": "p", "order_id": o["order_id"]}))
    assert (got["status"], got["filled_qty"], got["reserved"]) == ("CANCELED", "0", "0")
    assert ok(r.request("position.list", {"profile_id": "p"}))["positions"] == []
    led = ledger(r)
    assert (led["reserved_for_orders"], led["available"]) == ("0.00", "10000.00")


def test_a_sell_limit_far_below_the_market_is_reserved_at_the_market(market):
    server, r = market(FLAT)
    create(r, "1000")
    server.system.advance(1)
    # a SELL limit at 1 sells at the bid 100.00: reserved 3 * 100.00 * 1.0005 = 300.15
    placed = [ok(order(r, f"l{i}", side="SELL", qty="3", price="1")) for i in range(3)]
    assert {(o["reserved"], o["max_price"]) for o in placed} == {("300.15", "100.00")}
    error(order(r, "l3", side="SELL", qty="3", price="1"), "INSUFFICIENT_CAPITAL")
    server.system.advance(1)  # each fills at 100.00: 300.00, fee 0.15
    led = ledger(r)
    assert (led["reserved_for_positions"], led["fees"], led["available"], led["state"]) == (
        "900.00", "0.45", "99.55", "ACTIVE")


def test_take_profit_and_stop_loss_must_be_valid_against_the_price_and_the_market(market):
    server, r = market(FLAT)
    create(r, "10000")
    server.system.advance(1)
    before = ledger(r)
    # 0.0001 % of 100 rounds onto the price itself at 2 places
    details = error(signal(r, qty="1", tp_pct="0.0001"), "INVALID_ARGUMENT")
    assert details["field"] == "tp_pct"
    # a SELL take-profit 99.999999 % below 100 rounds to 0.00
    details = error(signal(r, side="SELL", qty="1", tp_pct="99.999999"), "INVALID_ARGUMENT")
    assert details["field"] == "tp_pct"
    # MARKET BUY "at 1" with tp 2: above its price, but the bid is 100.00 already
    details = error(order(r, "m1", type="MARKET", qty="1", price="1", tp_price="2"),
                    "INVALID_ARGUMENT")
    assert details["field"] == "tp_price"
    # a short's stop below the ask 100.20 would stop it out at once
    details = error(order(r, "m2", type="MARKET", side="SELL", qty="1", price=None,
                          sl_price="100.10"), "INVALID_ARGUMENT")
    assert details["field"] == "sl_price"
    assert ledger(r) == before
    # risk.check shows the crossed levels as a failed check
    res = risk_check(r, price="1", qty="1")
    assert (res["allowed"], res["reason"]) == (False, "TP_SL_CROSSED")
    c = check_of(res, "protection")
    assert (c["ok"], c["limit"]) == (False, "100.00")


def test_concentration_limits_of_the_quote_bind_signals_and_orders(market):
    # the default concentration: at most 10 % of equity in one ticker
    server, r = market(FLAT, allocation={"fallback_reserved_pct": "0",
                                         "min_order_notional": "0"})
    create(r, "10000")
    server.system.advance(1)
    q = ok(r.request("allocation.quote", {"profile_id": "p", "symbol": "TESTUSDT"}))
    assert (q["max_investable"], q["limited_by"]) == ("1000.00", ["MAX_TICKER"])
    hold = ok(r.request("allocation.reserve", {"profile_id": "p", "symbol": "TESTUSDT",
                                               "amount": "500",
                                               "client_request_id": "h1"}))

    # 500 held + a signal of notional 650, reserving 6.5 * 100.20 * 1.01 * 1.001 = 658.48
    res = ok(signal(r, notional="650", signal_id="s1"))
    assert (res["risk_ok"], res["risk_reason"]) == (False, "MAX_TICKER")
    # 500 + 5 * 100 * 1.0005 = 1000.25 > 1000.00
    details = rejected(order(r, "o1", qty="5"), "MAX_TICKER", "1000.00", "1000.25")
    assert details["check"] == "concentration_ticker"
    res = risk_check(r, qty="5")
    assert (res["allowed"], res["reason"]) == (False, "MAX_TICKER")
    c = check_of(res, "concentration_ticker")
    assert (c["ok"], c["limit"]) == (False, "1000.00")

    # 500 + 4 * 100 * 1.0005 = 900.20 fits; the quote then says what is left: 99.80
    ok(order(r, "o2", qty="4"))
    q = ok(r.request("allocation.quote", {"profile_id": "p", "symbol": "TESTUSDT"}))
    assert (q["concentration"]["ticker"]["invested"], q["max_investable"]) == (
        "900.20", "99.80")
    # an order that consumes the hold counts it once: 900.20 - 500 + 500.25 = 900.45
    ok(order(r, "o3", qty="5", reservation_id=hold["reservation_id"]))
    assert ledger(r)["held"] == "0.00"


def test_concentration_by_sector_across_symbols(market):
    steps = [[("TESTUSDT", "100.00", "100.20"), ("OTHERUSDT", "50.00", "50.10")]] * 3
    server, r = market(steps, allocation={
        "fallback_reserved_pct": "0", "min_order_notional": "0", "max_ticker": "1",
        "max_sector": "0.15",
        "instruments": {"TESTUSDT": {"sector": "coins"}, "OTHERUSDT": {"sector": "coins"}}})
    create(r, "10000")
    server.system.advance(1)
    ok(order(r, "a", qty="10", price="100"))  # 10 * 100 * 1.0005 = 1000.50
    # 1000.50 + 10 * 50 * 1.0005 = 1500.75 > 1500.00
    rejected(order(r, "b", symbol="OTHERUSDT", qty="10", price="50"), "MAX_SECTOR",
             "1500.00", "1500.75")
    ok(order(r, "c", symbol="OTHERUSDT", qty="9", price="50"))  # 450.23 -> 1450.73
