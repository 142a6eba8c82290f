"""A capflow server whose account is the ccxt adapter on a venue emulator: signals and
orders are rounded and checked by the venue's rules before anything is reserved, the
venue's fills (with a spot buy's fee in the coin bought) are booked, and a fill the
ledger cannot book puts the account in REDUCE_ONLY with an alert."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.account_messages import Restore
from capflow.actors.alerts import Alert
from capflow.actors.model import messages as m
from capflow.actors.model.errors import Denied
from capflow.brokers.ccxt_settings import entry_client_id

from .venue_kit import connected, exchange, live_brokers, order_sent, sent, wait


def test_a_signal_is_rounded_to_the_venue_steps_and_booked_as_the_venue_fills(live, venue):
    a = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.0100009", signal_id="A")
    assert a["risk_ok"], a
    assert a["qty"] == D("0.01")  # down to the lot step 0.000001
    assert live.trading.accounts.mode == "live"  # what health and BROKER_MODE see
    [order] = [order_sent(r) for r in wait(lambda: sent(venue, "create"))]
    assert order["client_id"] == entry_client_id(a["order_id"])
    assert (order["type"], order["tif"]) == ("limit", "IOC")
    assert D(order["price"]) % D("0.01") == 0  # the reserved price, on the tick
    # the venue filled 0.01 and kept 0.00001 BTC as its fee: the position holds the rest
    pos = wait(lambda: live.ledger("p").reserved_for_positions > 0 and
               live.trading.accounts.info("live"))
    assert pos is not None
    led = live.ledger("p")
    assert led.reserved_for_orders == 0
    assert led.fees == D("0.31")  # 0.00001 BTC at 30,000.10, rounded up
    # 300.001 paid (300.01 rounded up), of which 0.31 is the fee
    assert led.reserved_for_positions == D("299.70")
    assert led.available == D("5000.00") - D("300.01")


def test_entries_below_the_venue_minimums_reserve_nothing(live, venue):
    before = live.ledger("p")
    tiny = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.0000479", signal_id="T")
    assert (tiny["risk_ok"], tiny["risk_reason"]) == (False, "VENUE_MIN_QTY")
    short = live.signal("p", "BTCUSDT", "SELL", "30000.00", qty="0.01", signal_id="S")
    assert (short["risk_ok"], short["risk_reason"]) == (False, "VENUE_NO_SHORT")
    unlisted = live.signal("p", "DOGEUSDT", "BUY", "10", qty="100", signal_id="D")
    assert (unlisted["risk_ok"], unlisted["risk_reason"]) == (False, "VENUE_UNKNOWN_SYMBOL")
    with pytest.raises(Denied) as denied:
        live.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.00003",
                          price="29000")
    assert denied.value.details["reason"] == "VENUE_MIN_QTY"
    after = live.ledger("p")  # the refused signals are recorded; nothing is reserved
    assert (after.reserved_for_orders, after.available) == (before.reserved_for_orders,
                                                            before.available)
    assert not sent(venue, "create")


def test_a_limit_order_is_rounded_to_the_lot_step_and_down_to_the_tick(live, venue):
    out = live.submit_order("p", "o2", "BTCUSDT", "BUY", type="LIMIT", qty="0.0012345",
                            price="29000.017")
    order = out.result
    assert (order.qty, order.price) == (D("0.001234"), D("29000.01"))
    [order] = [order_sent(r) for r in wait(lambda: sent(venue, "create"))]
    assert (D(order["qty"]), D(order["price"])) == (D("0.001234"), D("29000.01"))
    assert order["tif"] in ("", "GTC")


def test_a_fill_the_ledger_cannot_book_sets_the_account_reduce_only_and_alerts(live, venue):
    alerts = []
    live.bus.subscribe(lambda events: alerts.extend(e for e in events
                                                    if isinstance(e, Alert)))
    # storage says an order is working that the profile's ledger does not hold (as
    # after a restart with rows that disagree): the venue fills it
    now = live.clock.now()
    ghost = m.OrderCapital("ord_18e9f247aa84e7674664058da23e", "BTCUSDT", "BUY", D("0.01"),
                           D("0"), D("0"), "NEW", None, now, now, account_id="live",
                           type="MARKET", position_id="pos_18e9f247aa84e7674664058da23e",
                           max_price=D("30100.00"))
    live.trading.accounts.ask("live", Restore([("p", ghost)], []))
    wait(lambda: live.trading.accounts.status["live"].booking_errors > 0)
    state = wait(lambda: live.trading.safety.account_state("live"))
    assert (state.state, state.changed_by) == ("REDUCE_ONLY", "reconcile")
    [alert] = wait(lambda: [a for a in alerts if a.kind == "fill_unbooked"])
    assert alert.scope == "account" and alert.target == "live"
    assert alert.details["fill_id"].startswith(exchange(venue) + ":")
    # new entries are refused; the venue did fill: one order there
    refused = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="B")
    assert not refused["risk_ok"]
    assert len(venue.orders()) == 1


def test_a_venue_away_at_start_is_retried_with_no_simulator_tick_to_drive_it(
        make_system, sqlite_url, venue, venue_keys):
    # the simulator is in step mode: no tick ever reaches the account manager, so only
    # the adapter's own worker can have the connection's backoff run
    venue.fault("*", "http", status=503, times=10**6)
    brokers = live_brokers(venue, symbols={"BTCUSDT": "BTC/USDT"})
    brokers["accounts"]["live"]["connect"] = {"base_delay_s": 0.05, "max_delay_s": 0.1,
                                              "max_attempts": 1000}
    cf = make_system(sqlite_url, brokers=brokers)
    wait(lambda: cf.trading.accounts.status["live"].state == "WAITING")
    venue.clear_faults()
    connected(cf)
