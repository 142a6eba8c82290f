"""Hostile inputs and edge paths of the order types, time in force, trailing stops,
position stops and protections, through the whole System."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import InvalidArgument

from ..actors.test_trading import SETTINGS, step, write_ticks


@pytest.fixture
def start(make_system, sqlite_url, tmp_path, clock):
    def run(rows, name="ticks.csv"):
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": write_ticks(tmp_path / name, rows),
                                      "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    return run


def _clean(cf, pid="p"):
    led = cf.ledger(pid)
    assert cf.audit(pid).ok
    assert led.available >= 0


@pytest.mark.parametrize("trail", [{"trail_amount": "0.001"}, {"trail_amount": "0.5001"},
                                   {"trail_pct": "1", "trail_activation": "101.005"}])
def test_a_trail_finer_than_the_price_step_is_refused(start, clock, trail):
    # a distance below one price step rounds to none (the stop at the best price): the
    # first tick that does not improve on it would close the position
    cf = start([("100.00", "100.20")] * 4)
    cf.create_profile("p", "10000")
    step(cf, clock)
    name = next(iter(k for k in trail if k != "trail_pct"))
    with pytest.raises(InvalidArgument) as err:
        cf.submit_order("p", "t1", "TESTUSDT", "BUY", "1", **trail)
    assert err.value.field == name
    with pytest.raises(InvalidArgument) as err:
        cf.signal("p", "TESTUSDT", "BUY", "100.20", **trail)
    assert err.value.field == name
    step(cf, clock, 2)
    assert cf.trading.list_positions("p")[0] == []
    assert cf.ledger("p").reserved_for_orders == D("0.00")
    _clean(cf)


@pytest.mark.parametrize("stops", [{"sl_price": "90.123456789"}, {"tp_price": "110.001"},
                                   {"trail_amount": "0.001"}])
def test_set_stops_finer_than_the_price_step_is_refused(start, clock, stops):
    cf = start([("100.00", "100.20")] * 6)
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "t1", "TESTUSDT", "BUY", "1", sl_price="90").result
    step(cf, clock, 2)
    with pytest.raises(InvalidArgument) as err:
        cf.set_stops("p", o.position_id, **stops)
    assert err.value.field == next(iter(stops))
    p = cf.trading.list_positions("p")[0][0]
    assert (p.status, p.tp_price, p.sl_price, p.trail_amount) == ("OPEN", None, D("90"), None)
    _clean(cf)


@pytest.mark.parametrize("at", [1e300, float("nan"), float("inf"), -1, 2**70,
                                "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+01:00",
                                "2026-01-05T12:00:01+23:59", "+002026-01-05T12:00:01Z"])
def test_an_odd_expire_at_is_invalid(start, clock, at):
    cf = start([("100.00", "100.20")] * 3)
    cf.create_profile("p", "10000")
    step(cf, clock)
    with pytest.raises(InvalidArgument):
        cf.submit_order("p", "g", "TESTUSDT", "BUY", "1", type="LIMIT", price="95",
                        time_in_force="GTD", expire_at=at)



def test_set_stops_clear_takes_a_list_or_nothing(start, clock):
    # the embedded API took clear="tp" letter by letter and clear=None as a TypeError
    cf = start([("100.00", "100.20")] * 5)
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "t", "TESTUSDT", "BUY", "1", sl_price="90", tp_price="110",
                        trail_pct="5").result
    step(cf, clock, 2)
    with pytest.raises(InvalidArgument) as err:
        cf.set_stops("p", o.position_id, clear="tp")
    assert err.value.field == "clear" and "list" in str(err.value)
    p = cf.set_stops("p", o.position_id, sl_price="95", clear=None)
    assert (p.tp_price, p.sl_price, p.trail_pct) == (D("110"), D("95"), D("5"))
    p = cf.set_stops("p", o.position_id, clear=("tp", "sl", "trail"))
    assert (p.tp_price, p.sl_price, p.trail_pct, p.trail_stop) == (None, None, None, None)
    step(cf, clock)
    assert cf.trading.list_positions("p")[0][0].status == "OPEN"
    _clean(cf)


def test_a_stop_gapping_past_its_reserved_price_ends_and_releases_all(start, clock):
    cf = start([("100.00", "100.20"), ("150.00", "150.20"), ("100.00", "100.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "s", "TESTUSDT", "BUY", "2", type="STOP",
                        trigger_price="101").result
    step(cf, clock, 2)
    e = cf.trading.get_order("p", o.order_id)
    assert (e.status, e.filled_qty, e.reserved) == ("CANCELED", 0, 0)
    assert "beyond the reserved price" in e.end_reason
    assert cf.trading.list_positions("p")[0] == []
    assert cf.ledger("p").reserved_for_orders == 0
    _clean(cf)


def test_fok_on_a_triggered_stop_without_the_liquidity_fills_nothing(start, clock):
    cf = start([("100.00", "100.20", 1), ("100.00", "100.20", 5)])
    cf.create_profile("p", "10000")
    step(cf, clock)
    first = cf.submit_order("p", "f", "TESTUSDT", "BUY", "3", time_in_force="FOK").result
    stop = cf.submit_order("p", "f2", "TESTUSDT", "BUY", "3", type="STOP",
                           trigger_price="100.1", time_in_force="FOK").result
    step(cf, clock)  # 5 offered: the first takes 3, the stop's 3 do not fit in 2
    ends = [cf.trading.get_order("p", x.order_id) for x in (first, stop)]
    assert [(e.status, e.filled_qty, e.end_reason, e.reserved) for e in ends] == [
        ("FILLED", 3, None, 0), ("CANCELED", 0, "fok_unfilled", 0)]
    assert cf.ledger("p").reserved_for_orders == 0
    _clean(cf)


def test_a_gtd_order_expires_on_the_tick_of_its_time_even_if_it_could_fill(start, clock):
    cf = start([("100.00", "100.20"), ("90.00", "90.20"), ("90.00", "90.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    at = clock.now() + timedelta(seconds=1)  # given as seconds since the epoch
    o = cf.submit_order("p", "g", "TESTUSDT", "BUY", "1", type="LIMIT", price="95",
                        time_in_force="GTD", expire_at=at.timestamp()).result
    step(cf, clock)
    e = cf.trading.get_order("p", o.order_id)
    assert (e.status, e.end_reason, e.filled_qty, e.reserved) == ("EXPIRED", "expired", 0, 0)
    _clean(cf)


def test_concurrent_set_stops_leave_the_broker_on_the_ledgers_stops(start, clock):
    # each call records its stops in the ledger, then tells the broker; two at once could
    # tell the broker in the other order, and it watched a stop-loss the ledger had not
    cf = start([("100.00", "100.20")] * 4)
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "t", "TESTUSDT", "BUY", "1", sl_price="80").result
    step(cf, clock, 2)
    adapter = cf.accounts.managers["paper"].proxy().adapter.get()
    diverged = []
    for n in range(40):
        go = threading.Barrier(4)

        def move(sl, go=go):
            go.wait()
            cf.set_stops("p", o.position_id, sl_price=sl)

        threads = [threading.Thread(target=move, args=(str(81 + n % 2 * 4 + k),))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ledger = cf.trading.list_positions("p", status="OPEN")[0][0].sl_price
        broker = adapter.positions[o.position_id].sl_price
        if ledger != broker:
            diverged.append((n, ledger, broker))
    assert diverged == []
    _clean(cf)
