"""Order types and time in force through the whole System: what a STOP reserves and
books, how IOC and GTD orders end and release their capital, and a GTD order that
expires while the server is down, ended at the next start.

Fees: taker 0.1 %, maker 0.05 %, no slippage; a market order (and a STOP) reserves its
notional at the worse of its price and the market + 1 % + the taker fee, rounded up.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import Conflict, InvalidArgument

from .test_trading import SETTINGS, step, write_ticks


@pytest.fixture
def start(make_system, sqlite_url, tmp_path, clock):
    def run(rows, name="ticks.csv"):
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": write_ticks(tmp_path / name, rows),
                                      "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    return run


def test_a_stop_reserves_at_its_trigger_and_fills_at_the_gap(start, clock):
    cf = start([("100.00", "100.20"), ("101.00", "101.20"), ("102.50", "102.60")])
    cf.create_profile("p", "10000")
    step(cf, clock)  # the market: 100.00 / 100.20
    o = cf.submit_order("p", "stop-1", "TESTUSDT", "BUY", "2", type="STOP",
                        trigger_price="102", sl_price="99").result
    # 2 * 102 (the trigger, worse than the ask) * 1.01 * 1.001 = 206.24604 -> 206.25
    assert (o.type, o.trigger_price, o.time_in_force, o.reserved) == (
        "STOP", D("102"), "GTC", D("206.25"))
    step(cf, clock)  # ask 101.20 < 102: not touched
    assert cf.trading.get_order("p", o.order_id).status == "OPEN"
    # (it never fills above 102 * 1.01 = 103.02, the price its capital covers)
    assert o.max_price == D("103.02")
    step(cf, clock)  # ask 102.60 gaps through 102: fills at 102.60, not 102
    filled = cf.trading.get_order("p", o.order_id)
    assert (filled.status, filled.avg_price) == ("FILLED", D("102.60"))
    led = cf.ledger("p")
    # 2 * 102.60 = 205.20 in the position; taker fee 0.2052 -> 0.21
    assert (led.reserved_for_orders, led.reserved_for_positions, led.fees) == (
        D("0.00"), D("205.20"), D("0.21"))
    assert cf.audit("p").ok


def test_an_ioc_remainder_is_canceled_with_its_reason_and_capital(start, clock):
    cf = start([("100.00", "100.20", 1), ("100.00", "100.20", 1)])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "ioc-1", "TESTUSDT", "BUY", "3", time_in_force="IOC").result
    step(cf, clock)  # 1 of 3 fills; the rest is canceled at once
    ended = cf.trading.get_order("p", o.order_id)
    assert (ended.status, ended.filled_qty, ended.end_reason, ended.reserved) == (
        "CANCELED", D("1"), "ioc_remainder", D("0"))
    assert cf.ledger("p").reserved_for_orders == D("0.00")
    assert cf.audit("p").ok


def test_a_gtd_order_expires_at_its_time(start, clock):
    cf = start([("100.00", "100.20")] * 3)
    cf.create_profile("p", "10000")
    step(cf, clock)
    at = clock.now() + timedelta(seconds=2)
    o = cf.submit_order("p", "gtd-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="95",
                        time_in_force="GTD", expire_at=at.isoformat()).result
    assert (o.time_in_force, o.expire_at) == ("GTD", at)
    step(cf, clock)  # one second: still working
    assert cf.trading.get_order("p", o.order_id).status == "OPEN"
    step(cf, clock)  # its time: expired, its capital released
    ended = cf.trading.get_order("p", o.order_id)
    assert (ended.status, ended.end_reason, ended.reserved) == ("EXPIRED", "expired", D("0"))
    assert cf.ledger("p").reserved_for_orders == D("0.00")


def test_a_gtd_order_that_expired_while_the_server_was_down_expires_at_start(start, clock):
    cf = start([("100.00", "100.20")], "before.csv")
    cf.create_profile("p", "10000")
    step(cf, clock)
    at = clock.now() + timedelta(seconds=30)
    o = cf.submit_order("p", "gtd-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="95",
                        time_in_force="GTD", expire_at=at.isoformat()).result
    keep = cf.submit_order("p", "gtd-2", "TESTUSDT", "BUY", "1", type="LIMIT", price="95",
                           time_in_force="GTD",
                           expire_at=(at + timedelta(hours=1)).isoformat()).result
    # 95 * 1.0005 = 95.0475 -> 95.05 each
    assert cf.ledger("p").reserved_for_orders == D("190.10")
    cf.stop()

    clock.advance(60)  # the server is down past the first one's expiry
    cf = start([("100.00", "100.20")], "after.csv")
    cf.trading.settle()  # the start restored the orders; the expired one ended
    ended = cf.trading.get_order("p", o.order_id)
    assert (ended.status, ended.end_reason, ended.reserved) == ("EXPIRED", "expired", D("0"))
    assert cf.trading.get_order("p", keep.order_id).status == "OPEN"
    assert cf.ledger("p").reserved_for_orders == D("95.05")
    assert cf.audit("p").ok


@pytest.mark.parametrize(("args", "field"), [
    ({"type": "STOP"}, "trigger_price"),
    ({"type": "STOP_LIMIT", "trigger_price": "102"}, "price"),
    ({"type": "STOP", "trigger_price": "102", "price": "103"}, "price"),
    ({"type": "LIMIT", "price": "99", "trigger_price": "98"}, "trigger_price"),
    ({"type": "TRAILING"}, "type"),
    ({"time_in_force": "DAY"}, "time_in_force"),
    ({"time_in_force": "GTD"}, "expire_at"),
    ({"expire_at": "2030-01-01T00:00:00Z"}, "expire_at"),
    ({"time_in_force": "GTD", "expire_at": "2020-01-01T00:00:00Z"}, "expire_at"),
    ({"time_in_force": "GTD", "expire_at": "2099-01-01T00:00:00Z"}, "expire_at"),
    ({"time_in_force": "GTD", "expire_at": "2026-01-05T13:00:00"}, "expire_at"),
    ({"time_in_force": "GTD", "expire_at": "soon"}, "expire_at"),
])
def test_order_fields_are_checked_before_anything_is_reserved(start, clock, args, field):
    cf = start([("100.00", "100.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    with pytest.raises(InvalidArgument) as caught:
        cf.submit_order("p", "bad", "TESTUSDT", "BUY", "1", **args)
    assert caught.value.details["field"] == field
    assert cf.ledger("p").reserved_for_orders == D("0.00")


def test_a_touched_stop_limit_stays_touched_across_a_restart(start, clock):
    cf = start([("100.00", "100.20"), ("102.40", "102.50")], "before.csv")
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "sl-1", "TESTUSDT", "BUY", "1", type="STOP_LIMIT",
                        price="101", trigger_price="102").result
    assert o.triggered_at is None
    step(cf, clock)  # ask 102.50 touches 102: a limit at 101 now, not crossed
    touched = cf.trading.get_order("p", o.order_id)
    assert (touched.status, touched.triggered_at) == ("OPEN", clock.now())
    cf.stop()

    cf = start([("100.80", "100.90")], "after.csv")
    step(cf, clock)  # below the trigger, but it was touched: the limit fills at 100.90
    filled = cf.trading.get_order("p", o.order_id)
    assert (filled.status, filled.avg_price, filled.triggered_at) == (
        "FILLED", D("100.90"), touched.triggered_at)
    assert cf.audit("p").ok


def test_a_repeat_after_a_restart_is_the_same_order(start, clock):
    """The client order keys rebuilt from storage compare what a new one compares: the
    trigger, the time in force and the expiry too."""
    cf = start([("100.00", "100.20")], "before.csv")
    cf.create_profile("p", "10000")
    step(cf, clock)
    at = (clock.now() + timedelta(hours=1)).isoformat()
    args = {"type": "STOP", "trigger_price": "102", "time_in_force": "GTD", "expire_at": at}
    o = cf.submit_order("p", "stop-1", "TESTUSDT", "BUY", "2", **args).result
    cf.stop()

    cf = start([("100.00", "100.20")], "after.csv")
    again = cf.submit_order("p", "stop-1", "TESTUSDT", "BUY", "2", **args)
    assert again.reused
    assert cf.ledger("p").reserved_for_orders == o.reserved
    with pytest.raises(Conflict):
        cf.submit_order("p", "stop-1", "TESTUSDT", "BUY", "2",
                        **{**args, "trigger_price": "103"})
