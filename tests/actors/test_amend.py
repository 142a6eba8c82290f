"""`order.amend` through the whole System (paper broker, SQLite): what an amended order
reserves, what its fills book, what is refused and leaves it as it was, and that the
amend survives a restart. After each step the ledger equals its rebuild from rows.

Fees: taker 0.1 %, maker 0.05 %, no slippage (tests/actors/test_trading.py).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import CapflowError, Conflict, InvalidArgument
from capflow.brokers.base import BrokerAdapter
from capflow.brokers.paper import PaperBroker

from .test_trading import SETTINGS, step, write_ticks


class NoAmendBroker(PaperBroker):
    """A paper broker whose venue cannot amend orders (the base adapter's default)."""

    amend_order = BrokerAdapter.amend_order


@pytest.fixture
def start(make_system, sqlite_url, tmp_path, clock):
    def run(rows, name="ticks.csv", **account):
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": write_ticks(tmp_path / name, rows),
                                      "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS,
                                                           **account}}})
    return run


def audited(cf):
    report = cf.audit("p")
    assert report.ok, report
    return cf.ledger("p")


def test_an_amended_limit_reserves_its_new_cost_and_fills_at_its_new_price(start, clock):
    cf = start([("100.00", "100.20"), ("99.00", "99.20"), ("98.80", "98.90")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT",
                        price="98").result
    assert o.reserved == D("196.10")  # 196 + 0.098 -> 0.10
    before = audited(cf).available
    a = cf.amend_order("p", o.order_id, qty="3", price="99")
    # 3 * 99 = 297, maker fee 0.1485 -> 0.15: 101.05 more taken from available
    assert (a.qty, a.price, a.reserved, a.max_price) == (D("3"), D("99"), D("297.15"),
                                                          D("99"))
    led = audited(cf)
    assert (led.reserved_for_orders, led.available) == (D("297.15"), before - D("101.05"))
    stored = cf.trading.get_order("p", o.order_id)
    assert (stored.qty, stored.price, stored.reserved) == (D("3"), D("99"), D("297.15"))
    step(cf, clock)  # ask 99.20 > 99: not crossed
    step(cf, clock)  # ask 98.90 <= 99: all 3 fill at 98.90
    filled = cf.trading.get_order("p", o.order_id)
    assert (filled.status, filled.filled_qty, filled.avg_price) == ("FILLED", D("3"),
                                                                     D("98.90"))
    led = audited(cf)
    # 3 @ 98.90 = 296.70, fee 0.14835 -> 0.15
    assert (led.reserved_for_orders, led.reserved_for_positions, led.fees) == (
        D("0.00"), D("296.70"), D("0.15"))


def test_a_smaller_amend_gives_capital_back_and_a_repeat_changes_nothing(start, clock):
    cf = start([("100.00", "100.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT",
                        price="98").result
    a = cf.amend_order("p", o.order_id, qty="1")
    assert a.reserved == D("98.05")  # 98 + 0.049 -> 0.05
    assert audited(cf).reserved_for_orders == D("98.05")
    seq = cf.ledger("p").seq
    again = cf.amend_order("p", o.order_id, qty="1")
    assert again.reserved == D("98.05") and cf.ledger("p").seq == seq  # nothing new


def test_an_amend_that_cannot_be_covered_leaves_the_order_as_it_was(start, clock):
    cf = start([("100.00", "100.20")])
    cf.create_profile("p", "1000")
    step(cf, clock)
    o = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT",
                        price="98").result
    with pytest.raises(CapflowError) as err:
        cf.amend_order("p", o.order_id, qty="20")  # 1960.98 > what is available
    assert err.value.code == "INSUFFICIENT_CAPITAL"
    stored = cf.trading.get_order("p", o.order_id)
    assert (stored.qty, stored.reserved) == (D("2"), D("196.10"))
    assert audited(cf).reserved_for_orders == D("196.10")


def test_what_cannot_be_amended_is_refused_with_its_reason(start, clock):
    cf = start([("100.00", "100.20", 1)] * 3 + [("100.00", "100.20", 5)])
    cf.create_profile("p", "10000")
    step(cf, clock)
    m = cf.submit_order("p", "mkt-1", "TESTUSDT", "BUY", "1").result
    with pytest.raises(Conflict) as err:
        cf.amend_order("p", m.order_id, qty="2")
    assert err.value.details["reason"] == "ORDER_NOT_AMENDABLE"
    assert err.value.details["type"] == "MARKET"
    lim = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "3", type="LIMIT",
                          price="101").result
    with pytest.raises(InvalidArgument):
        cf.amend_order("p", lim.order_id)  # nothing to change
    with pytest.raises(InvalidArgument) as bad:
        cf.amend_order("p", lim.order_id, trigger_price="102")  # not a stop
    assert bad.value.field == "trigger_price"
    step(cf, clock)  # 1 unit of liquidity: the market order fills first (it came first)
    step(cf, clock)  # then 1 of the limit's 3
    part = cf.trading.get_order("p", lim.order_id)
    assert (part.status, part.filled_qty) == ("PARTIALLY_FILLED", D("1"))
    with pytest.raises(InvalidArgument) as low:
        cf.amend_order("p", lim.order_id, qty="1")  # not above what filled
    assert low.value.field == "qty"
    a = cf.amend_order("p", lim.order_id, qty="2")  # one left to fill, at 101
    assert a.reserved == D("101.06")  # 101 + 0.0505 -> 0.06
    assert audited(cf).reserved_for_orders == D("101.06")
    step(cf, clock)
    done = cf.trading.get_order("p", lim.order_id)
    assert (done.status, done.filled_qty) == ("FILLED", D("2"))
    with pytest.raises(Conflict) as ended:
        cf.amend_order("p", lim.order_id, qty="3")
    assert ended.value.details == {"order_id": lim.order_id, "status": "FILLED",
                                   "type": "LIMIT", "reason": "ORDER_NOT_AMENDABLE"}
    audited(cf)


def test_a_stop_is_re_reserved_at_its_new_trigger(start, clock):
    cf = start([("100.00", "100.20"), ("102.50", "102.60"), ("103.50", "103.60")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "stop-1", "TESTUSDT", "BUY", "2", type="STOP",
                        trigger_price="102").result
    assert (o.reserved, o.max_price) == (D("206.25"), D("103.02"))
    a = cf.amend_order("p", o.order_id, trigger_price="103")
    # 2 * 103 * 1.01 * 1.001 = 208.26806 -> 208.27; never filled above 103 * 1.01
    assert (a.trigger_price, a.reserved, a.max_price) == (D("103"), D("208.27"),
                                                           D("104.03"))
    audited(cf)
    step(cf, clock)  # ask 102.60: the old trigger would have fired, the new one not
    assert cf.trading.get_order("p", o.order_id).status == "OPEN"
    step(cf, clock)  # ask 103.60 touches 103: fills at 103.60
    filled = cf.trading.get_order("p", o.order_id)
    assert (filled.status, filled.avg_price) == ("FILLED", D("103.60"))
    with pytest.raises(Conflict):
        cf.amend_order("p", o.order_id, trigger_price="104")
    audited(cf)


def test_an_amend_survives_a_restart(start, clock):
    cf = start([("100.00", "100.20")], "before.csv")
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT",
                        price="95").result
    cf.amend_order("p", o.order_id, qty="4", price="97")
    cf.stop()

    cf = start([("97.50", "97.60"), ("96.80", "96.90")], "after.csv")
    led = audited(cf)
    assert led.reserved_for_orders == D("388.20")  # 388 + 0.194 -> 0.20
    step(cf, clock)  # ask 97.60 > 97: the amended price holds (95 would too)
    assert cf.trading.get_order("p", o.order_id).status == "OPEN"
    step(cf, clock)  # ask 96.90 <= 97 (and above the old 95): the amended 4 fill
    filled = cf.trading.get_order("p", o.order_id)
    assert (filled.status, filled.filled_qty, filled.avg_price) == ("FILLED", D("4"),
                                                                     D("96.90"))
    audited(cf)


def test_a_venue_that_cannot_amend_refuses_before_anything_changes(start, clock):
    cf = start([("100.00", "100.20")], adapter=f"{__name__}:NoAmendBroker")
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT",
                        price="98").result
    with pytest.raises(CapflowError) as err:
        cf.amend_order("p", o.order_id, qty="3")
    assert (err.value.code, err.value.details["reason"]) == ("RISK_REJECTED",
                                                             "VENUE_UNSUPPORTED_ORDER")
    assert cf.trading.get_order("p", o.order_id).qty == D("2")
    assert audited(cf).reserved_for_orders == D("196.10")
