"""The metrics endpoint of a System whose account is the ccxt adapter on the Bybit
emulator, scraped over real HTTP: the connection state, the age of the venue's prices
(no answers, and answers that no longer move), the last reconciliation's differences,
and the latency of orders from their send to the venue's acknowledgement."""

from __future__ import annotations

import pytest

from ..metrics_kit import scrape, value
from .venue_kit import connected, live_brokers, wait


@pytest.fixture
def venue(bybit_venue):
    """These tests are about faults on Bybit's paths."""
    return bybit_venue


TICKERS = "/v5/market/tickers"
METRICS = {"listen": "127.0.0.1:0"}


@pytest.fixture
def start(make_system, sqlite_url, venue, venue_keys):
    def make(wait_connected: bool = True, **settings):
        brokers = live_brokers(venue, symbols={"BTCUSDT": "BTC/USDT"},
                               **{"price_interval_s": 0.05, "stale_after_s": 0.5,
                                  "reconcile_every_s": 0, **settings})
        brokers["accounts"]["live"]["connect"] = {"base_delay_s": 0.1, "max_delay_s": 0.2,
                                                  "max_attempts": 1000, "jitter": 0}
        cf = make_system(sqlite_url, simulator={"symbols": {}}, brokers=brokers,
                         metrics=METRICS)
        return connected(cf) if wait_connected else cf

    return make


def metric(cf, name, **labels):
    return value(scrape(cf), name, account="live", **labels)


def test_the_connection_state_is_0_until_the_venue_answers_then_1(start, venue):
    venue.fault("*", "http", status=503, times=10**6)  # the venue is down at start
    cf = start(wait_connected=False)
    assert metric(cf, "capflow_account_connected") == 0
    venue.clear_faults()
    wait(lambda: metric(cf, "capflow_account_connected") == 1)


def test_price_age_grows_while_the_venue_does_not_answer(start, venue):
    cf = start()
    wait(lambda: metric(cf, "capflow_venue_price_age_seconds", symbol="BTCUSDT") is not None)
    assert metric(cf, "capflow_account_prices_stale") == 0
    venue.fault(TICKERS, "http", status=503, times=10**6)
    wait(lambda: metric(cf, "capflow_account_prices_stale") == 1)
    got = scrape(cf)
    assert value(got, "capflow_account_prices_age_seconds", account="live") > 0.5
    assert value(got, "capflow_venue_price_age_seconds", account="live",
                 symbol="BTCUSDT") > 0.5
    venue.clear_faults()
    wait(lambda: metric(cf, "capflow_account_prices_stale") == 0)
    assert metric(cf, "capflow_venue_price_age_seconds", symbol="BTCUSDT") < 0.5


def test_frozen_tickers_grow_the_time_since_the_price_changed(start, venue):
    cf = start()
    wait(lambda: metric(cf, "capflow_venue_price_unchanged_seconds", symbol="BTCUSDT")
         is not None)
    venue.freeze_tickers()  # the venue answers, with the prices of this moment
    venue.set_price("BTCUSDT", "30100.00", "30100.10")  # while its market moves on

    def frozen():
        got = scrape(cf)
        same = value(got, "capflow_venue_price_unchanged_seconds", account="live",
                     symbol="BTCUSDT")
        arrived = value(got, "capflow_venue_price_age_seconds", account="live",
                        symbol="BTCUSDT")
        return same > 1.0 and arrived < same  # answers still arrive; prices do not move

    wait(frozen)
    venue.thaw_tickers()
    wait(lambda: metric(cf, "capflow_venue_price_unchanged_seconds", symbol="BTCUSDT")
         < 1.0)


def test_a_balance_that_disagrees_shows_as_reconcile_differences(start, venue):
    cf = start()
    cf.account_reconcile("live")
    got = scrape(cf)
    assert value(got, "capflow_reconcile_differences", account="live") == 0
    first = value(got, "capflow_reconcile_last_timestamp_seconds", account="live")
    assert first > 0
    venue.set_balance("ETH", "2")  # coins capflow holds no position in
    cf.account_reconcile("live")
    got = scrape(cf)
    assert value(got, "capflow_reconcile_differences", account="live") == 1
    assert value(got, "capflow_reconcile_last_timestamp_seconds", account="live") >= first
    # the account went REDUCE_ONLY: an alert that stands, health degraded
    wait(lambda: value(scrape(cf), "capflow_alerts_active", source="account") == 1)
    assert value(scrape(cf), "capflow_health", status="degraded") == 1


def test_an_order_sent_to_the_venue_counts_in_the_latency_histogram(start, venue):
    cf = start()
    got = scrape(cf)
    assert value(got, "capflow_order_ack_latency_seconds_count", account="live") == 0
    cf.create_profile("p", "5000")
    a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    assert a["risk_ok"], a
    wait(lambda: cf.trading.list_positions("p", status="OPEN")[0])
    got = scrape(cf)
    assert value(got, "capflow_order_ack_latency_seconds_count", account="live") == 1
    assert value(got, "capflow_order_ack_latency_seconds_sum", account="live") > 0
    assert value(got, "capflow_order_ack_latency_seconds_bucket", account="live",
                 le="+Inf") == 1
