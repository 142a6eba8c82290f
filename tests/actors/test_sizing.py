"""The sizing policy, the pure part (actors/model/sizing.py): the bisection over lots,
and a ledger shrinking a signal to its risk per trade on a venue's lot step, down to the
venue's minimum and no further."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from capflow.actors.model.ledger import Ledger
from capflow.actors.model.limits import RiskLimits
from capflow.actors.model.orders import Signal, SignalPolicy, order_reservation
from capflow.actors.model.sizing import largest_fit
from capflow.actors.model.venue import VenueRule

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
COARSE = VenueRule(venue_symbol="X/USDT", qty_step=D("0.05"), price_tick=D("0.25"),
                   min_qty=D("0.5"), min_notional=D("1"))


def test_largest_fit_is_the_last_lot_that_fits():
    assert largest_fit(D("10"), D("0.05"), lambda q: q <= D("3.07")) == D("3.05")
    assert largest_fit(D("10"), D("0.05"), lambda q: q <= D("0.01")) == 0
    # the quantity itself is known not to fit: never returned
    assert largest_fit(D("1"), D("0.5"), lambda q: True) == D("0.5")
    assert largest_fit(D("1.2"), D("0.5"), lambda q: True) == D("1.0")


def _ledger(limits: RiskLimits) -> Ledger:
    led = Ledger("p1", "USDT", 2)
    led.deposit("10000.00", "seed", T0)
    led.attach_risk(limits=limits)
    return led


def _policy(n: int = 1) -> SignalPolicy:
    return SignalPolicy(order_id=f"ord_{n}", position_id=f"pos_{n}", account_id="live",
                        tp_pct=D(2), sl_pct=D(1), risk_per_trade_pct=D(1),
                        reserve_buffer_pct=D("0.5"), taker_fee=D("0.001"), price_places=2,
                        qty_places=6, venue=COARSE)


def test_a_signal_shrinks_to_its_risk_per_trade_on_the_lot_step():
    # 0.1 % of 10000 at risk at most: 10; the stop 1 % below 10.00 is 9.90, 0.10 a
    # unit -> at most 100 units; 150 asked
    led = _ledger(RiskLimits(max_risk_per_trade_pct=D("0.1"), sizing="shrink"))
    sig = Signal(symbol="XUSDT", side="BUY", price=D("10.00"), timestamp="t",
                 signal_id="s1", qty=D("150"))
    what_if = led.what_if_signal(sig, _policy(), T0)
    assert (what_if["qty"], what_if["sizing"]["bound_by"]) == (D("100.00"),
                                                              "max_risk_per_trade")
    out = led.submit_signal(sig, _policy(), T0)
    assert out.result.risk_ok and out.result.qty == D("100.00")
    assert out.detail["sizing"]["granted_qty"] == D("100.00")
    assert led.orders["ord_1"].reserved == order_reservation(D("100.00"), D("10.00"),
                                                             D("0.5"), D("0.001"), 2)


def test_no_shrink_below_the_venue_minimum():
    # 0.01 % of 10000 is 1: with a stop 5 % below, 0.50 a unit, 2 units; the venue
    # takes 0.5 and up: granted 2.00. With a stop 50 % below (5.00 a unit) 0.2 units
    # would do, below the venue's 0.5: refused
    led = _ledger(RiskLimits(max_risk_per_trade_pct=D("0.01"), sizing="shrink"))
    sig = Signal(symbol="XUSDT", side="BUY", price=D("10.00"), timestamp="t",
                 signal_id="s1", qty=D("150"), sl_pct=D(5))
    assert led.submit_signal(sig, _policy(), T0).result.qty == D("2.00")
    refused = led.submit_signal(Signal(symbol="YUSDT", side="BUY", price=D("10.00"),
                                       timestamp="t", signal_id="s2", qty=D("150"),
                                       sl_pct=D(50)), _policy(2), T0)
    assert (refused.result.risk_ok, refused.result.risk_reason) == (False,
                                                                    "MAX_RISK_PER_TRADE")
    assert refused.detail["sizing"]["granted_qty"] is None
    assert refused.detail["sizing"]["min_qty"] == D("0.5")
