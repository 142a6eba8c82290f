"""The line to the venue of a live account: order sends go out before polls (and between a
poll's requests), each endpoint group keeps to the venue's own limit and backs off until
the venue's reset time after a rate-limit answer, and a drop while polling is a lost
connection that heals by itself: health degraded and an alert while it lasts, capital
of orders in flight kept, reconnected and reconciled once the venue answers."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from capflow.actors.alerts import Alert
from capflow.brokers.ccxt_settings import entry_client_id
from capflow.brokers.events import Connected, ConnectionFailed

from .venue_kit import connected, live_brokers, wait


@pytest.fixture
def venue(bybit_venue):
    """These tests are about Bybit's documented per-endpoint limits and paths."""
    return bybit_venue


def _health(cf):
    from capflow.protocol.system_ops import health

    return health(cf, 0.0, "test", False)


def test_an_order_goes_out_between_the_requests_of_a_poll(make_system, sqlite_url, venue,
                                                          venue_keys):
    """60 resting orders are followed, one order read each per poll; a new order goes out
    after the read under way (and those while capflow took the order), not after the
    rest of the poll (60 reads at most, 30 on average)."""
    venue.auto_match = False
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"}, poll_interval_s=0.001,
        price_interval_s=0.001)))
    cf.create_profile("p", "9000")
    for i in range(60):
        cf.submit_order("p", f"r{i}", "BTCUSDT", "BUY", type="LIMIT", qty="0.0001",
                        price="20000")
    wait(lambda: len(venue.requests("/v5/order/create")) == 60, 30)
    wait(lambda: len(venue.requests("/v5/order/realtime")) > 60, 30)  # a poll went by
    counts = []
    for i in range(5):
        before = len(venue.requests())
        order = cf.submit_order("p", f"n{i}", "BTCUSDT", "BUY", type="LIMIT", qty="0.0001",
                                price="20000").result
        link = entry_client_id(order.order_id)
        wait(lambda link=link: venue.order(link) is not None)
        after = venue.requests()[before:]
        at = next(n for n, r in enumerate(after) if r.path == "/v5/order/create")
        counts.append(len([r for r in after[:at] if r.path != "/v5/order/create"]))
    # reads also go out while capflow itself takes the order (longer on a loaded
    # machine): the median, not the worst, says whether a send waits for a whole poll
    assert sorted(counts)[2] <= 10, counts


def test_a_rate_limit_answer_holds_its_endpoint_until_the_venue_resets_it(
        make_system, sqlite_url, venue, venue_keys):
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"})))
    cf.create_profile("p", "5000")
    venue.fault("/v5/order/create", "ratelimit", reset_in_ms=1500)
    out = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.001",
                          price="29000").result
    link = entry_client_id(out.order_id)
    wait(lambda: venue.order(link) is not None)  # looked up, then sent again
    creates = venue.requests("/v5/order/create")
    assert creates[0].ret_code == 10006 and len(creates) == 2
    reset = creates[0].at + 1500
    assert creates[1].at >= reset - 5  # not before the venue said (its clock, in ms)
    # the other endpoints were not held: the order was looked up in the meantime
    assert [r for r in venue.requests("/v5/order/realtime") if r.at < reset]


@pytest.mark.parametrize("fault", [{"kind": "http", "status": 503}, {"kind": "drop"}])
def test_a_drop_while_polling_is_a_lost_connection_that_heals(make_system, sqlite_url,
                                                              venue, venue_keys, fault):
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"}, reconcile_every_s=0)))
    events, alerts = [], []
    cf.bus.subscribe(lambda batch: events.extend(
        e for e in batch if isinstance(e, Connected | ConnectionFailed)))
    cf.bus.subscribe(lambda batch: alerts.extend(e for e in batch if isinstance(e, Alert)))
    cf.create_profile("p", "5000")
    venue.auto_match = False
    order = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                            price="29000").result
    link = entry_client_id(order.order_id)
    wait(lambda: venue.order(link) is not None)
    reserved = cf.ledger("p").reserved_for_orders
    assert reserved > 0
    reconciles = len(venue.requests("/v5/execution/list"))

    kind = fault.pop("kind")
    venue.fault("*", kind, times=1_000_000, **fault)
    wait(lambda: cf.trading.accounts.status["live"].state != "CONNECTED")
    wait(lambda: [e for e in events if isinstance(e, ConnectionFailed)])
    assert _health(cf)["status"] == "degraded"
    assert any("connection lost" in r for r in _health(cf)["reasons"])
    [alert] = wait(lambda: [a for a in alerts if a.kind == "connection_lost"])
    assert alert.target == "live"
    assert cf.ledger("p").reserved_for_orders == reserved  # in flight: kept
    venue.fill(link, "0.004", "29000")  # filled at the venue while unreachable

    venue.clear_faults()
    wait(lambda: cf.trading.accounts.status["live"].state == "CONNECTED", 20)
    wait(lambda: _health(cf)["status"] == "ok")
    # reconciled at once (reconcile_every_s = 0: only at a connect or when asked)
    wait(lambda: len(venue.requests("/v5/execution/list")) > reconciles)
    wait(lambda: cf.ledger("p").reserved_for_positions > 0)  # the fill is booked
    assert cf.ledger("p").reserved_for_orders < reserved
    assert cf.ledger("p").reserved_for_orders > 0  # the rest still works at the venue
    assert len([a for a in alerts if a.kind == "connection_lost"]) == 1
    assert D(venue.order(link).cum_qty) == D("0.004")


def test_a_failed_connect_is_retried_without_anything_else_waking_the_account(
        make_system, sqlite_url, venue, venue_keys):
    """The first connect attempts fail (the venue answers 503); nothing but the adapter's
    own worker steps the account manager (no simulated symbols tick), and it connects."""
    venue.fault("/v5/market/instruments-info", "http", status=503, times=2)
    cf = make_system(sqlite_url, brokers=live_brokers(venue))
    wait(lambda: cf.trading.accounts.status["live"].state == "CONNECTED", 20)
    assert len(venue.requests("/v5/market/instruments-info")) >= 3


def test_an_order_goes_out_while_a_poll_waits_for_its_endpoint_limit(
        make_system, sqlite_url, venue, venue_keys):
    """An order read answered with a rate limit holds the order reads (and the poll) for
    3 s; an order sent meanwhile does not wait for them."""
    venue.auto_match = False
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"})))
    cf.create_profile("p", "5000")
    cf.submit_order("p", "rest", "BTCUSDT", "BUY", type="LIMIT", qty="0.001",
                    price="20000")
    wait(lambda: venue.requests("/v5/order/realtime"))  # it is followed
    venue.fault("/v5/order/realtime", "ratelimit", reset_in_ms=3000)
    [limited] = wait(lambda: [r for r in venue.requests("/v5/order/realtime")
                              if r.ret_code == 10006])
    # the poll after it (0.05 s later) is held at its order read: send while it is
    time.sleep(0.5)
    order = cf.submit_order("p", "now", "BTCUSDT", "BUY", type="LIMIT", qty="0.001",
                            price="20000").result
    link = entry_client_id(order.order_id)
    wait(lambda: venue.order(link) is not None)
    [create] = [r for r in venue.requests("/v5/order/create")
                if r.body["orderLinkId"] == link]
    assert create.at < limited.at + 3000
    later = [r for r in venue.requests("/v5/order/realtime") if r.at > limited.at]
    assert all(r.at >= limited.at + 3000 - 5 for r in later)  # the reads did wait
