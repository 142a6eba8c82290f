"""Scale-in through the whole System (paper broker, SQLite): `order.submit` with the
`position_id` of an open position adds to it. Its fills move the position's quantity,
reservation and volume-weighted entry price exactly; its stops stay unless the order
gives its own; what cannot be added to is refused; a scale-in still working when its
position closes is canceled. After each step the ledger equals its rebuild from rows.

Fees: taker 0.1 %, maker 0.05 %, no slippage (tests/actors/test_trading.py).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import CapflowError, Conflict, NotFound

from .test_amend import audited, start  # noqa: F401 -- the fixture
from .test_trading import SETTINGS, step, write_ticks


def position(cf, position_id):
    return {p.position_id: p for p in cf.trading.list_positions("p")[0]}[position_id]


def test_a_scale_in_adds_to_the_position_at_the_weighted_price(start, clock):  # noqa: F811
    cf = start([("100.00", "100.20"), ("100.00", "100.20"), ("98.80", "98.90"),
                ("104.00", "104.10"), ("105.00", "105.10")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    first = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "2", tp_price="110",
                            sl_price="90").result
    step(cf, clock)  # 2 @ 100.20 = 200.40, taker fee 0.2004 -> 0.21
    pid = first.position_id
    add = cf.submit_order("p", "dca-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="99",
                          position_id=pid).result
    assert (add.position_id, add.reserved) == (pid, D("99.05"))  # 99 + 0.0495 -> 0.05
    led = audited(cf)
    assert (led.reserved_for_orders, led.reserved_for_positions) == (D("99.05"),
                                                                      D("200.40"))
    step(cf, clock)  # ask 98.90 <= 99: 1 @ 98.90, maker fee 0.04945 -> 0.05
    p = position(cf, pid)
    # (2 * 100.20 + 98.90) / 3 = 99.766666...; its stops as they were
    assert (p.qty_open, p.qty_total, p.entry_notional, p.reserved, p.entry_price,
            p.tp_price, p.sl_price, p.fees) == (
        D("3"), D("3"), D("299.30"), D("299.30"), D("99.7666666667"), D("110"), D("90"),
        D("0.26"))
    led = audited(cf)
    assert (led.reserved_for_orders, led.reserved_for_positions) == (D("0.00"),
                                                                      D("299.30"))
    # a scale-in with its own take-profit moves the position's
    cf.submit_order("p", "dca-2", "TESTUSDT", "BUY", "1", type="LIMIT", price="104.10",
                    tp_price="105", position_id=pid)
    step(cf, clock)  # 1 @ 104.10: tp now 105 (the stop stays 90)
    p = position(cf, pid)
    assert (p.qty_open, p.entry_notional, p.tp_price, p.sl_price) == (
        D("4"), D("403.40"), D("105"), D("90"))
    audited(cf)
    step(cf, clock)  # bid 105.00 reaches the new take-profit: 4 @ 105.00 = 420.00
    closed = {x.position_id: x for x in cf.trading.list_positions("p", status="CLOSED")[0]}
    p = closed[pid]
    assert (p.status, p.close_reason, p.realized_pnl) == ("CLOSED", "tp", D("16.60"))
    audited(cf)


def test_what_a_scale_in_cannot_add_to_is_refused(start, clock):  # noqa: F811
    cf = start([("100.00", "100.20")] * 3)
    cf.create_profile("p", "1000")
    step(cf, clock)
    first = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "2").result
    step(cf, clock)
    pid = first.position_id
    with pytest.raises(NotFound):
        cf.submit_order("p", "x-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="99",
                        position_id="pos_nope")
    with pytest.raises(Conflict) as side:
        cf.submit_order("p", "x-2", "TESTUSDT", "SELL", "1", type="LIMIT", price="101",
                        position_id=pid)
    assert side.value.details["side"] == "BUY"
    with pytest.raises(CapflowError) as short:  # 9 * 99 = 891 + fee: not available
        cf.submit_order("p", "x-3", "TESTUSDT", "BUY", "9", type="LIMIT", price="99",
                        position_id=pid)
    assert short.value.code == "INSUFFICIENT_CAPITAL"
    cf.close_position("p", pid)
    with pytest.raises(Conflict) as closing:
        cf.submit_order("p", "x-4", "TESTUSDT", "BUY", "1", type="LIMIT", price="99",
                        position_id=pid)
    assert closing.value.details["status"] == "CLOSING"
    step(cf, clock)
    with pytest.raises(Conflict) as closed:
        cf.submit_order("p", "x-5", "TESTUSDT", "BUY", "1", type="LIMIT", price="99",
                        position_id=pid)
    assert closed.value.details["status"] == "CLOSED"
    audited(cf)


def test_a_working_scale_in_is_canceled_when_its_position_closes(start, clock):  # noqa: F811
    cf = start([("100.00", "100.20"), ("100.00", "100.20"), ("89.00", "89.20"),
                ("80.00", "80.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    first = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "2", sl_price="90").result
    step(cf, clock)
    pid = first.position_id
    add = cf.submit_order("p", "dca-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="85",
                          position_id=pid).result
    step(cf, clock)  # bid 89.00 <= 90: stopped out; the scale-in is canceled with it
    o = cf.trading.get_order("p", add.order_id)
    assert (o.status, o.end_reason, o.reserved) == ("CANCELED", "position closed", D("0"))
    step(cf, clock)  # ask 80.20 would have filled it at 85: nothing reopens
    closed = {x.position_id: x for x in cf.trading.list_positions("p", status="CLOSED")[0]}
    assert (closed[pid].qty_total, closed[pid].close_reason) == (D("2"), "sl")
    assert cf.trading.list_positions("p", status="OPEN")[0] == []
    led = audited(cf)
    assert (led.reserved_for_orders, led.reserved_for_positions) == (D("0.00"), D("0.00"))


def test_the_ledger_itself_refuses_a_scale_in_of_a_position_that_is_not_open():
    """The last word is the ledger's, in one step with the reservation: a position may
    close between the check of `order.submit` and the order's recording, or before a
    venue reports a scale-in's fill -- never reopened under its id."""
    from datetime import UTC, datetime

    from capflow.actors.model.ledger import Ledger
    from capflow.actors.model.orders import OrderSpec

    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    led = Ledger("p1", "USDT", 2)
    led.deposit("1000", "seed", now)

    def spec(oid, pid, side="BUY"):
        return OrderSpec(order_id=oid, position_id=pid, symbol="BTCUSDT", side=side,
                         type="LIMIT", qty=D("1"), price=D("100"))

    led.open_order(spec("ord_1", "pos_1"), "100.05", now)
    led.fill_entry("f1", "ord_1", "pos_1", "1", "100", "0", now)
    with pytest.raises(Conflict):  # the other side
        led.open_order(spec("ord_2", "pos_1", "SELL"), "100.05", now)
    led.open_order(spec("ord_3", "pos_1"), "100.05", now)  # a scale-in, working
    led.request_close("pos_1", "manual", now)
    with pytest.raises(Conflict):  # closing
        led.open_order(spec("ord_4", "pos_1"), "100.05", now)
    led.fill_exit("x1", "pos_1", "1", "101", "0", now)
    with pytest.raises(NotFound):
        led.open_order(spec("ord_5", "pos_1"), "100.05", now)
    before = led.buckets()
    with pytest.raises(Conflict):  # its fill reported after the close: not reopened
        led.fill_entry("f2", "ord_3", "pos_1", "1", "100", "0", now, book=True)
    assert "pos_1" not in led.positions and led.buckets() == before
    assert led.violations() == []


def test_adding_size_takes_no_open_position_slot(make_system, sqlite_url, tmp_path,
                                                  clock):
    """At the profile's open position limits, a scale-in adds to a position already
    counted and an amend adds size to an order already counted: neither is refused
    MAX_OPEN_POSITIONS (a new entry still is)."""
    cf = make_system(sqlite_url, clock=clock,
                     simulator={"replay": write_ticks(tmp_path / "t.csv",
                                                      [("100.00", "100.20")] * 3),
                                "symbols": {}},
                     brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                     risk={"limits": {"max_open_positions": 1,
                                      "max_open_positions_per_symbol": 1}})
    cf.create_profile("p", "10000")
    step(cf, clock)
    e = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "2").result
    step(cf, clock)
    s = cf.submit_order("p", "s-1", "TESTUSDT", "BUY", "1", type="LIMIT", price="90",
                        position_id=e.position_id).result
    assert (s.status, s.reserved) == ("OPEN", D("90.05"))  # 90 + 0.045 -> 0.05
    a = cf.amend_order("p", s.order_id, qty="3")
    assert (a.qty, a.reserved) == (D("3"), D("270.14"))  # 270 + 0.135 -> 0.14
    with pytest.raises(CapflowError) as full:
        cf.submit_order("p", "e-2", "TESTUSDT", "BUY", "1", type="LIMIT", price="90")
    assert full.value.details["reason"] == "MAX_OPEN_POSITIONS"
    audited(cf)


def test_a_position_held_at_no_broker_cannot_be_added_to_at_one(start, clock):  # noqa: F811
    """A position booked by hand (no broker account) is not one the paper broker holds:
    a scale-in sent there would leave the broker with a position the ledger counts as
    part of another. It is refused, and nothing is reserved."""
    cf = start([("100.00", "100.20")] * 2)
    cf.create_profile("p", "10000")
    step(cf, clock)
    cf.reserve_order("p", "ord_bare", "TESTUSDT", "BUY", "2", "201")
    cf.fill_entry("p", "ord_bare", "pos_bare", "2", "100", "0.1")
    before = audited(cf)
    with pytest.raises(Conflict) as err:
        cf.submit_order("p", "s-1", "TESTUSDT", "BUY", "1", position_id="pos_bare")
    assert err.value.details == {"position_id": "pos_bare", "account_id": None}
    step(cf, clock)
    assert position(cf, "pos_bare").qty_open == D("2")
    assert audited(cf) == before
