"""A live account whose venue is down when capflow starts connects once the venue is back,
by its own retries: with no simulated symbols nothing else reaches its manager."""

from __future__ import annotations

from .venue_kit import live_brokers, wait


def test_a_venue_down_at_start_is_connected_by_the_retries(make_system, sqlite_url, venue,
                                                           venue_keys):
    venue.fault("*", "http", status=503, times=10**6)
    brokers = live_brokers(venue, symbols={"BTCUSDT": "BTC/USDT"})
    brokers["accounts"]["live"]["connect"] = {"base_delay_s": 0.1, "max_delay_s": 0.2,
                                              "max_attempts": 1000, "jitter": 0}
    cf = make_system(sqlite_url, simulator={"symbols": {}}, brokers=brokers)
    status = cf.trading.accounts.status["live"]
    wait(lambda: status.connection_events)  # the first attempt failed
    assert status.state != "CONNECTED"
    venue.clear_faults()
    wait(lambda: status.state == "CONNECTED")
