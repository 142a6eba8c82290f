"""`position.reduce` through the whole System (paper broker, SQLite): partial exits by
quantity or fraction, each booked with its PnL pro rata, the rest open with its stops;
a fraction of 1 is a close; what cannot be reduced is refused. After each step the
ledger equals its rebuild from rows.

Fees: taker 0.1 %, maker 0.05 %, no slippage (tests/actors/test_trading.py).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import Conflict, InvalidArgument

from .test_amend import audited, start  # noqa: F401 -- the fixture
from .test_trading import step


def position(cf, position_id):
    return {p.position_id: p for p in cf.trading.list_positions("p")[0]}[position_id]


def test_reduce_by_qty_then_fraction_then_all(start, clock):  # noqa: F811
    cf = start([("100.00", "100.20"), ("100.00", "100.20"), ("101.00", "101.20"),
                ("102.00", "102.20"), ("100.00", "100.20")])
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "10", tp_price="110",
                        sl_price="90").result
    step(cf, clock)  # 10 @ 100.20 = 1002.00
    pid = o.position_id
    p, q, closing = cf.reduce_position("p", pid, qty="3")
    assert (q, closing) == (D("3"), False)
    step(cf, clock)  # 3 @ 101.00 = 303.00; released 1002.00 * 3 / 10 = 300.60
    p = position(cf, pid)
    assert (p.status, p.qty_open, p.reserved, p.realized_pnl, p.tp_price, p.sl_price) == (
        "OPEN", D("7"), D("701.40"), D("2.40"), D("110"), D("90"))
    audited(cf)
    _, q, _ = cf.reduce_position("p", pid, fraction="0.5")
    assert q == D("3.5")
    with pytest.raises(Conflict) as pending:  # one exit at a time
        cf.reduce_position("p", pid, qty="1")
    assert pending.value.details["status"] == "EXITING"
    step(cf, clock)  # 3.5 @ 102.00 = 357.00; released 701.40 / 2 = 350.70
    p = position(cf, pid)
    assert (p.qty_open, p.reserved, p.realized_pnl) == (D("3.5"), D("350.70"), D("8.70"))
    audited(cf)
    p, q, closing = cf.reduce_position("p", pid, fraction="1")
    assert (q, closing, p.close_requested) == (D("3.5"), True, "manual")
    with pytest.raises(Conflict) as shut:
        cf.reduce_position("p", pid, fraction="0.5")
    assert shut.value.details["status"] == "CLOSING"
    step(cf, clock)  # 3.5 @ 100.00 = 350.00: -0.70; in all 1010.00 - 1002.00
    closed = {x.position_id: x for x in cf.trading.list_positions("p", status="CLOSED")[0]}
    assert (closed[pid].realized_pnl, closed[pid].exit_notional) == (D("8.00"),
                                                                     D("1010.00"))
    led = audited(cf)
    assert (led.reserved_for_positions, led.realized_pnl) == (D("0.00"), D("8.00"))
    with pytest.raises(Conflict) as gone:
        cf.reduce_position("p", pid, qty="1")
    assert gone.value.details["status"] == "CLOSED"


def test_what_cannot_be_reduced_is_refused(start, clock):  # noqa: F811
    cf = start([("100.00", "100.20")] * 2)
    cf.create_profile("p", "10000")
    step(cf, clock)
    o = cf.submit_order("p", "e-1", "TESTUSDT", "BUY", "2").result
    step(cf, clock)
    pid = o.position_id
    for args, field in (({}, "qty"), ({"qty": "1", "fraction": "0.5"}, "qty"),
                        ({"fraction": "1.5"}, "fraction"), ({"fraction": "0"}, "fraction"),
                        ({"qty": "3"}, "qty"), ({"qty": "-1"}, "qty"),
                        ({"fraction": "0.0000001"}, "fraction")):
        with pytest.raises(InvalidArgument) as err:
            cf.reduce_position("p", pid, **args)
        assert err.value.field == field, args
    assert position(cf, pid).qty_open == D("2")
    audited(cf)
