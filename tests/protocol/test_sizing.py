"""The sizing policy through the wire: ``sizing = "shrink"`` (per signal, or in the risk
profile's limits) lowers an entry to the largest quantity its limits allow, down to the
instrument's minimum; the answer of `signal.submit` and `risk.check` shows the shrink,
and the order reserves exactly what the shrunk order can cost.

The market: TESTUSDT replayed in step mode, with no tick before the first step, so a
signal's MARKET entry at 100 reserves qty * 100 * 1.01 (the slippage buffer) * 1.001
(the paper broker's taker fee 0.1 %), rounded up to the cent; quantities have 6 places.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest

from capflow.cli_risk import risk_table

from .replies import error, ok
from .test_risk_ops import market  # noqa: F401 -- the fixture
from .test_trading_ops import signal

STEP = Decimal("0.000001")


def reserve(qty: Decimal) -> Decimal:
    """What a signal's entry of `qty` reserves (orders.order_reservation)."""
    return (qty * Decimal("100") * Decimal("1.01") * Decimal("1.001")).quantize(
        Decimal("0.01"), rounding=ROUND_CEILING)


def test_shrink_to_free_capital_reserves_what_the_shrunk_order_costs(market):  # noqa: F811
    _server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    # 20 would reserve 2022.02 of the 1000 free: refused by default, as before
    assert ok(signal(r, qty="20"))["risk_reason"] == "INSUFFICIENT_CAPITAL"
    res = ok(signal(r, qty="20", sizing="shrink", signal_id="s1"))
    assert (res["risk_ok"], res["risk_reason"]) == (True, None), res
    granted = Decimal(res["qty"])
    assert reserve(granted) <= 1000 < reserve(granted + STEP)
    assert res["sizing"] == {"requested_qty": "20", "granted_qty": res["qty"],
                             "bound_by": "capital", "code": "INSUFFICIENT_CAPITAL",
                             "limit": "1000.00", "min_qty": None}
    order = ok(r.request("order.get", {"profile_id": "p", "order_id": res["order_id"]}))
    assert (order["qty"], Decimal(order["reserved"])) == (res["qty"], reserve(granted))
    led = ok(r.request("ledger.get", {"profile_id": "p"}))
    assert Decimal(led["available"]) == 1000 - reserve(granted)
    # a repeat is the first answer, without the shrink (it is not stored)
    again = ok(signal(r, qty="20", sizing="shrink", signal_id="s1"))
    assert (again["reused"], again["qty"], "sizing" in again) == (True, res["qty"], False)


def test_shrink_from_the_risk_profile_to_max_notional_and_refuse_per_signal(market):  # noqa: F811
    _server, r = market(risk={"limits": {"max_notional": "500", "sizing": "shrink"}})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    check = ok(r.request("risk.check", {"profile_id": "p", "symbol": "TESTUSDT",
                                        "side": "BUY", "price": "100", "qty": "10"}))
    assert check["allowed"] is True
    granted = Decimal(check["qty"])
    row = next(c for c in check["checks"] if c["check"] == "max_notional")
    # valued at the worse of the signal's price and the market's
    price = Decimal(row["value"]) / granted
    assert granted * price <= 500 < (granted + STEP) * price
    assert (check["sizing"]["requested_qty"], check["sizing"]["bound_by"],
            check["sizing"]["code"], check["sizing"]["limit"]) == (
        "10", "max_notional", "MAX_NOTIONAL", "500")
    table = risk_table(check)
    assert f"sizing: shrunk from 10 to {check['qty']} (bound by max_notional: " in table
    res = ok(signal(r, qty="10"))
    assert (res["risk_ok"], res["qty"], res["sizing"]["granted_qty"]) == (
        True, check["qty"], check["qty"])
    # the signal's own choice wins over its profile's
    assert ok(signal(r, qty="10", sizing="refuse"))["risk_reason"] == "MAX_NOTIONAL"


def test_no_shrink_below_the_minimum_nor_past_a_check_size_does_not_change(market):  # noqa: F811
    _server, r = market(risk={"limits": {"max_notional": "500", "min_qty": "6",
                                         "max_open_positions": 1}})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    res = ok(signal(r, qty="10", sizing="shrink"))
    assert (res["risk_ok"], res["risk_reason"], res["qty"]) == (False, "MAX_NOTIONAL", None)
    assert (res["sizing"]["granted_qty"], res["sizing"]["min_qty"]) == (None, "6")
    assert ok(signal(r, qty="6", sizing="shrink"))["risk_reason"] == "MAX_NOTIONAL"
    assert ok(signal(r, qty="4", sizing="shrink"))["risk_ok"] is True  # fits: unchanged
    # one position is open: the count is not a matter of size, so nothing is shrunk
    # and the first check that fails refuses it, as without the option
    res = ok(signal(r, qty="10", sizing="shrink"))
    assert (res["risk_reason"], "sizing" in res) == ("MAX_NOTIONAL", False)
    assert ok(signal(r, qty="1", sizing="shrink"))["risk_reason"] == "MAX_OPEN_POSITIONS"


@pytest.mark.parametrize("bad", ["SHRINK", "partial", 1])
def test_sizing_must_be_refuse_or_shrink(market, bad):  # noqa: F811
    _server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    assert error(signal(r, qty="1", sizing=bad), "INVALID_ARGUMENT") == {"field": "sizing"}
    assert ok(signal(r, qty="1", sizing="refuse"))["risk_ok"] is True
