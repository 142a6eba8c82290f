"""A live venue's rules and fills, the pure part: rounding to its steps before anything
is reserved, a fill it reports after the order ended, and a fee it takes in the coin
bought."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from capflow.actors.model.errors import Denial, InvalidArgument, NotFound
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import OrderFilled
from capflow.actors.model.orders import Signal, SignalPolicy
from capflow.actors.model.venue import (
    VenueRule,
    VenueRules,
    apply_rule,
    price_to_tick,
    qty_down,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
D = Decimal
BTC = VenueRule(venue_symbol="BTC/USDT", qty_step=D("0.000001"), price_tick=D("0.1"),
                min_qty=D("0.000048"), min_notional=D("5"))
COARSE = VenueRule(venue_symbol="X/USDT", qty_step=D("0.05"), price_tick=D("0.25"),
                   min_notional=D("1"))


def new_ledger(allocated: str = "10000.00") -> Ledger:
    led = Ledger("p1", "USDT", 2)
    led.deposit(allocated, "seed", T0)
    return led


def test_steps_round_toward_the_side_that_never_pays_more():
    assert qty_down(D("0.12345678"), BTC) == D("0.123456")
    assert qty_down(D("0.19"), COARSE) == D("0.15")  # a step that is not a power of ten
    assert qty_down(D("0.04"), COARSE) == 0
    assert price_to_tick("BUY", D("100.37"), COARSE) == D("100.25")
    assert price_to_tick("SELL", D("100.37"), COARSE) == D("100.50")
    assert price_to_tick("BUY", D("100.25"), COARSE) == D("100.25")  # on the tick: kept


def test_the_minimums_are_checked_after_rounding_with_stable_codes():
    # 0.0000489 rounds down to 0.000048: exactly the minimum, 0.000048 * 110000 = 5.28
    assert apply_rule("BUY", D("0.0000489"), None, D("110000"), BTC) == (D("0.000048"),
                                                                          None)
    low = apply_rule("BUY", D("0.0000479"), None, D("110000"), BTC)
    assert isinstance(low, Denial) and low.details["reason"] == "VENUE_MIN_QTY"
    # 0.000049 * 100000 = 4.9 < 5
    small = apply_rule("BUY", D("0.0000499"), None, D("100000"), BTC)
    assert isinstance(small, Denial) and small.details["reason"] == "VENUE_MIN_NOTIONAL"
    assert small.details["value"] == D("4.900000")
    # the notional of a limit order is taken at its rounded limit price
    limit = apply_rule("BUY", D("4.03"), D("0.249"), D("0.3"), COARSE)
    assert isinstance(limit, Denial) and limit.details["reason"] == "VENUE_MIN_NOTIONAL"
    assert apply_rule("BUY", D("4.03"), D("0.26"), D("0.3"), COARSE) == (D("4.00"), D("0.25"))
    short = apply_rule("SELL", D("1"), None, D("100"), COARSE)
    assert isinstance(short, Denial) and short.details["reason"] == "VENUE_NO_SHORT"
    # an exit sells what is held: no short involved
    assert apply_rule("SELL", D("1.07"), D("100.3"), D("100"), COARSE,
                      entry=False) == (D("1.05"), D("100.50"))


def test_rules_not_loaded_or_an_unlisted_symbol_refuse_with_their_code():
    waiting = VenueRules().rule("BTCUSDT")
    assert isinstance(waiting, Denial) and waiting.details["reason"] == "VENUE_RULES_UNKNOWN"
    loaded = VenueRules({"BTCUSDT": BTC}, loaded=True)
    assert loaded.rule("BTCUSDT") is BTC
    unknown = loaded.rule("DOGEUSDT")
    assert isinstance(unknown, Denial) and unknown.details["reason"] == "VENUE_UNKNOWN_SYMBOL"


def _policy(**kw) -> SignalPolicy:
    base = dict(order_id="ord_1", position_id="pos_1", account_id="live", tp_pct=D(2),
                sl_pct=D(1), risk_per_trade_pct=D(1), reserve_buffer_pct=D("0.5"),
                taker_fee=D("0.001"), price_places=2, qty_places=6)
    return SignalPolicy(**{**base, **kw})


def _signal(**kw) -> Signal:
    base = dict(symbol="XUSDT", side="BUY", price=D("10.00"), timestamp="t",
                signal_id="s1")
    return Signal(**{**base, **kw})


def test_a_signal_is_sized_to_the_lot_step_and_reserved_at_a_limit_on_the_tick():
    led = new_ledger()
    out = led.submit_signal(_signal(qty=D("3.07")), _policy(venue=COARSE), T0)
    rec = out.result
    assert rec.risk_ok and rec.qty == D("3.05")
    order = led.orders["ord_1"]
    assert order.qty == D("3.05")
    # the limit the venue is sent (max_price) is a multiple of the tick, rounded down
    assert order.max_price % COARSE.price_tick == 0 and order.max_price <= D("10.05")


def test_a_signal_below_the_venue_minimum_reserves_nothing():
    led = new_ledger()
    before = led.buckets()
    rec = led.submit_signal(_signal(qty=D("0.04")), _policy(venue=COARSE), T0).result
    assert not rec.risk_ok and rec.risk_reason == "VENUE_MIN_QTY"
    rec = led.submit_signal(_signal(signal_id="s2", qty=D("0.05"), price=D("10")),
                            _policy(venue=COARSE), T0).result
    assert not rec.risk_ok and rec.risk_reason == "VENUE_MIN_NOTIONAL"
    assert led.buckets() == before and not led.orders


def test_a_fill_reported_after_the_order_was_canceled_is_booked():
    led = new_ledger()
    led.reserve_order("o1", "SOLUSDT", "BUY", "10", "1500", T0)
    led.fill_entry("f1", "o1", "pos1", "4", "150", "0", T0, book=True)
    led.end_order("o1", "CANCELED", T0)
    assert led.reserved_for_orders == D("0.00")
    # the venue filled 2 more before the cancel reached it: that happened, book it
    out = led.fill_entry("f2", "o1", "pos1", "2", "150", "0.30", T0, book=True)
    assert isinstance(out.events[0], OrderFilled)
    assert out.events[0].order.status == "CANCELED" and out.events[0].order.filled_qty == 6
    assert led.positions["pos1"].qty_open == D("6")
    assert led.reserved_for_positions == D("900.00") and led.reserved_for_orders == 0
    assert led.available == D("10000.00") - D("900.00") - D("0.30")
    assert not led.violations()
    # beyond the order's quantity it is still refused; so is a fill nobody reports
    with pytest.raises(InvalidArgument):
        led.fill_entry("f3", "o1", "pos1", "5", "150", "0", T0, book=True)
    with pytest.raises(NotFound):
        led.fill_entry("f4", "o1", "pos1", "1", "150", "0", T0)


def test_a_buy_fee_taken_in_the_coin_bought_leaves_the_position_short_of_it():
    led = new_ledger()
    led.reserve_order("o1", "BTCUSDT", "BUY", "0.01", "1001", T0)
    # 0.01 BTC bought at 100,000 (1,000 USDT); the venue kept 0.00001 BTC as its fee
    out = led.fill_entry("f1", "o1", "pos1", "0.01", "100000", "0", T0, book=True,
                         fee_qty="0.00001")
    fill = out.events[0]
    assert fill.order.status == "FILLED" and fill.order.filled_qty == D("0.01")
    p = led.positions["pos1"]
    assert p.qty_open == D("0.00999")
    # the fee is the coins' value; with the position's cost it is what was paid
    assert led.fees == D("1.00") and p.entry_notional == D("999.00")
    assert led.available == D("10000.00") - D("1000.00")
    assert not led.violations()
    with pytest.raises(InvalidArgument):
        led.reserve_order("o2", "BTCUSDT", "BUY", "0.01", "1001", T0)
        led.fill_entry("f2", "o2", "pos2", "0.01", "100000", "0", T0, fee_qty="0.01")
