"""Time in force and order types on a live spot venue (the ccxt adapter on the Bybit
and Bitget emulators): IOC and FOK go to the venue as its time in force and their ends
carry capflow's reasons; GTC is the venue's default; STOP, STOP_LIMIT and GTD are refused
(VENUE_UNSUPPORTED_ORDER) before anything is reserved or sent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import Denied
from capflow.brokers.events import EntryFilled, OrderCanceled

from .test_ccxt_venue import ORDER_ID, creates, entry, harness, keys  # noqa: F401
from .venue_kit import order_sent, sent, wait


def with_tif(o, tif):
    return type(o)(**{**{f: getattr(o, f) for f in o.__struct_fields__},
                      "time_in_force": tif})


@pytest.mark.parametrize(("kind", "price", "tif", "sent_tif", "end"), [
    ("LIMIT", "29000.00", "IOC", "IOC", "ioc_remainder"),  # below the ask: nothing fills
    ("LIMIT", "29000.00", "FOK", "FOK", "fok_unfilled"),
    ("MARKET", None, "FOK", "FOK", None),  # all of it at the ask 30000.10
    ("MARKET", None, "IOC", "IOC", None),
])
def test_ioc_and_fok_go_out_as_the_venue_time_in_force(harness, venue, kind, price, tif,  # noqa: F811
                                                        sent_tif, end):
    h = harness().connected()
    h.b.submit_order(with_tif(entry("0.01", type=kind, price=price), tif))
    if end is None:
        [fill] = h.pump(lambda: h.of(EntryFilled))
        assert fill.qty == D("0.01") and not h.of(OrderCanceled)
    else:
        [canceled] = h.pump(lambda: h.of(OrderCanceled))
        assert canceled.reason == end and not h.of(EntryFilled)
    [create] = creates(venue)
    assert (order_sent(create)["type"], order_sent(create)["tif"]) == ("limit", sent_tif)


def test_stops_and_gtd_are_refused_by_a_live_venue_before_anything_is_reserved(live, venue):
    before = live.ledger("p")
    at = (live.clock.now() + timedelta(hours=1)).isoformat()
    for n, args in enumerate([
            {"type": "STOP", "trigger_price": "31000"},
            {"type": "STOP_LIMIT", "trigger_price": "31000", "price": "31100"},
            {"type": "LIMIT", "price": "29000", "time_in_force": "GTD", "expire_at": at}]):
        with pytest.raises(Denied) as denied:
            live.submit_order("p", f"o{n}", "BTCUSDT", "BUY", qty="0.01", **args)
        assert denied.value.details["reason"] == "VENUE_UNSUPPORTED_ORDER"
    gtd = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="G",
                      time_in_force="GTD", expire_at=at)
    assert (gtd["risk_ok"], gtd["risk_reason"]) == (False, "VENUE_UNSUPPORTED_ORDER")
    after = live.ledger("p")
    assert (after.reserved_for_orders, after.available) == (before.reserved_for_orders,
                                                            before.available)
    assert not sent(venue, "create")
    # an IOC signal goes out as IOC
    ioc = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="I",
                      time_in_force="IOC")
    assert ioc["risk_ok"], ioc
    [order] = wait(lambda: sent(venue, "create"))
    assert order_sent(order)["tif"] == "IOC"


def test_trailing_stops_are_refused_by_a_live_venue_before_anything_is_reserved(live, venue):
    """The ccxt adapter does not watch trails: an order or a signal with one is refused
    as an order type the venue cannot take."""
    before = live.ledger("p")
    for n, args in enumerate([{"trail_amount": "100"},
                              {"trail_pct": "1.5", "trail_activation": "30500"}]):
        with pytest.raises(Denied) as denied:
            live.submit_order("p", f"t{n}", "BTCUSDT", "BUY", qty="0.01", type="LIMIT",
                              price="29000", **args)
        assert denied.value.details == {"reason": "VENUE_UNSUPPORTED_ORDER", "limit": None,
                                        "value": "trail"}
    trailed = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="T",
                          trail_pct="1")
    assert (trailed["risk_ok"], trailed["risk_reason"]) == (False, "VENUE_UNSUPPORTED_ORDER")
    after = live.ledger("p")
    assert (after.reserved_for_orders, after.available) == (before.reserved_for_orders,
                                                            before.available)
    assert not creates(venue)
