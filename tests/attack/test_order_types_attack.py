"""Hostile inputs and edge paths of the order types, time in force, trailing stops,
position stops and protections, through the whole System."""

from __future__ import annotations

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
