"""The ccxt spot adapter against a hostile or broken venue (the Bybit emulator made to
answer what a real venue should not) and a careless configuration: numbers that are not
amounts, settings that are not durations."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from capflow.actors.account_messages import Close
from capflow.actors.alerts import Alert
from capflow.actors.model.settings import ConfigError
from capflow.brokers.ccxt_settings import entry_client_id, parse_settings, read_credentials
from capflow.brokers.ccxt_venue import CcxtSpotBroker
from capflow.brokers.config import AccountConfig

from .venue_kit import connected, exchange, live_brokers, wait

ADAPTER = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
KEYS = {"exchange": "bybit", "api_key_env": "A", "api_secret_env": "B"}


@pytest.mark.parametrize("setting", ["timeout_s", "poll_interval_s", "price_interval_s",
                                     "stale_after_s", "reconcile_every_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", 1e12])
def test_a_duration_that_is_no_number_of_seconds_is_refused_at_load(setting, value):
    # TOML has nan and inf; a worker that waits nan seconds, a connect timeout of inf ms
    # or prices that never go stale are not settings anyone meant
    with pytest.raises(ConfigError, match=setting):
        CcxtSpotBroker.check_config("live", AccountConfig(
            adapter=ADAPTER, settings={**KEYS, setting: value}))


@pytest.mark.parametrize("settings, named", [
    ({"taker_fee": "abc"}, "taker_fee"), ({"maker_fee": "-0.001"}, "maker_fee"),
    ({"taker_fee": "NaN"}, "taker_fee"), ({"lookups_before_resend": 0},
                                          "lookups_before_resend")])
def test_fee_rates_and_lookups_are_checked_at_load_not_at_start(settings, named):
    with pytest.raises(ConfigError, match=named):
        CcxtSpotBroker.check_config("live", AccountConfig(
            adapter=ADAPTER, settings={**KEYS, **settings}))


# -- fills that are not fills ---------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("qty", "NaN"), ("price", "NaN"), ("fee", "NaN"), ("price", "Infinity"),
    ("price", "-29000"), ("qty", "0.02"), ("price", "123456789012345678901234567890"),
    ("price", "40000")])
def test_a_venue_fill_with_numbers_that_make_no_sense_is_not_booked_and_alerts(
        live, venue, field, value):
    # the venue answers a trade whose quantity, price or fee is not a number, is
    # negative, absurdly large, more than the order's quantity, or a buy above the
    # order's limit (capital no reservation covers: past any max_live_capital)
    alerts = []
    live.bus.subscribe(lambda events: alerts.extend(e for e in events
                                                    if isinstance(e, Alert)))
    venue.auto_match = False
    order = live.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                              price="29000").result
    wait(lambda: venue.order(link_id=entry_client_id(order.order_id)))
    trade = venue.fill(entry_client_id(order.order_id), "0.004")
    setattr(trade, field, D(value))
    # nothing of it is booked; the operator is told, and the account only reduces
    [alert] = wait(lambda: [a for a in alerts if a.kind == "fill_unbooked"])
    # (a fee of NaN makes ccxt fail to parse the order's trades: the fill is the part of
    # the order the venue says filled and no trade explains)
    name = exchange(venue)
    assert alert.details["fill_id"] in (f"{name}:{trade.exec_id}",
                                        f"{name}:{trade.order.order_id}:unread")
    state = wait(lambda: live.trading.safety.account_state("live"))
    assert state.state == "REDUCE_ONLY"
    # the order is still followed: the account's entries are canceled, and it ends
    wait(lambda: live.ledger("p").reserved_for_orders == 0)
    led = live.ledger("p")
    assert (led.reserved_for_positions, led.available) == (0, D("5000.00"))
    info = live.trading.accounts.info("live")
    assert info.equity.is_finite() and info.margin_used == 0


def test_a_missed_fill_the_reconcile_finds_that_makes_no_sense_is_not_booked(
        make_system, sqlite_url, bybit_venue, venue_keys):
    """A position's exit filled at the venue with a price of NaN, its answer lost, and
    capflow stopped; after the restart only the reconcile finds that trade: it is shown
    as a difference and alerted, not booked. (On Bybit: its faults name its paths and
    error codes.)"""
    venue = bybit_venue
    def start(**extra):
        cf = connected(make_system(sqlite_url, simulator={"symbols": {}},
                                   brokers=live_brokers(venue, **{"reconcile_every_s": 0,
                                                                  **extra})))
        wait(lambda: cf.trading.accounts.status["live"].last_reconcile is not None)
        return cf

    cf = start(lookups_before_resend=1000)
    cf.create_profile("p", "5000")
    a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    wait(lambda: cf.ledger("p").reserved_for_positions > 0)
    venue.fault("/v5/order/create", "reject", code=170131, msg="Insufficient balance.")
    pid = a["position_id"]
    cf.close_position("p", pid)
    wait(lambda: len(venue.requests("/v5/order/create")) == 2)
    venue.fault("/v5/order/create", "lose", delay=0)  # the venue sells; the answer is lost
    venue.fault("/v5/order/realtime", "http", status=503, times=10_000)  # no lookups
    wait(lambda: cf.trading.accounts.ask("live", Close("p", pid)) and
         len(venue.requests("/v5/order/create")) == 3)
    [sold] = [o for o in venue.orders() if o.side == "Sell" and o.status == "Filled"]
    [trade] = [x for x in venue.executions() if x.order is sold]
    trade.price = D("NaN")
    cf.stop()
    venue.clear_faults()
    cf = start()  # its first reconcile found the trade
    report = cf.trading.accounts.status["live"].last_reconcile.report
    [odd] = report["unknown_fills"]
    assert odd["fill_id"] == f"bybit:{trade.exec_id}" and "price" in odd["unbookable"]
    assert report["missed_fills"] == [] and report["differences"] >= 1
    state = wait(lambda: cf.trading.safety.account_state("live"))
    assert state.state == "REDUCE_ONLY"
    assert cf.trading.accounts.info("live").equity.is_finite()
    assert cf.ledger("p").reserved_for_positions > 0  # nothing of it was booked


# -- prices that are not prices -------------------------------------------------------

@pytest.mark.parametrize(("bid", "ask", "last", "size"), [
    ("NaN", "30000.10", None, None), ("30000.00", "Infinity", None, None),
    ("1e20", "1e21", None, None),
    ("30000.00", "30000.10", None, "NaN"), ("30000.00", "30000.10", None, "-1")])
def test_a_ticker_that_is_no_price_is_ignored_and_orders_are_still_followed(
        make_system, sqlite_url, venue, venue_keys, bid, ask, last, size):
    live = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"}, price_interval_s=0.05)))
    live.create_profile("p", "5000")
    venue.auto_match = False
    order = live.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                              price="29000").result
    cid = entry_client_id(order.order_id)
    wait(lambda: venue.order(link_id=cid))
    with venue.lock:  # the tickers answer this, whatever the book's price
        venue.book.quotes["BTCUSDT"].bid = D(bid)
        venue.book.quotes["BTCUSDT"].ask = D(ask)
        venue.book.quotes["BTCUSDT"].last = None if last is None else D(last)
        venue.book.quotes["BTCUSDT"].bid_size = None if size is None else D(size)
        venue.freeze_tickers()
        venue.set_price("BTCUSDT", "30000.00", "30000.10")
    time.sleep(0.3)  # several polls of those tickers
    venue.fill(cid, "0.01")
    wait(lambda: live.ledger("p").reserved_for_positions > 0)  # the fill was booked
    tick = live.trading.board.get("BTCUSDT")
    assert tick is None or (tick.bid, tick.ask) == (D("30000.00"), D("30000.10"))
    assert tick is None or (tick.liquidity.is_finite() and tick.liquidity >= 0)


# -- credentials ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[1, 2]", '"venue-key"', "null"])
def test_a_key_file_that_is_json_but_no_object_stops_the_account_naming_it(tmp_path, text):
    # (a ValueError stops the account for good, naming the setting; anything else was
    # retried as if the venue were away)
    key_file = tmp_path / "key.json"
    key_file.write_text(text)
    key_file.chmod(0o600)
    settings = parse_settings("live", {"exchange": "bybit", "key_file": str(key_file)})
    with pytest.raises(ValueError, match=r"key_file .* has no api_key and secret"):
        read_credentials("live", settings)


def test_two_symbols_for_one_venue_market_stop_start_up_naming_the_table(
        make_system, sqlite_url, venue, venue_keys):
    # the adapter could not be built: the account sat DISCONNECTED, nothing said why
    with pytest.raises(ConfigError, match="symbols") as refused:
        make_system(sqlite_url, brokers=live_brokers(
            venue, symbols={"BTCUSDT": "BTC/USDT", "XBTUSDT": "BTC/USDT"}))
    assert "BTC/USDT" in str(refused.value)
    assert not venue.requests()


def test_a_key_revoked_while_running_is_a_lost_connection_that_alerts(
        make_system, sqlite_url, bybit_venue, venue_keys):
    """The balance read is the first to meet a key the venue no longer takes (Bybit
    10003): the account is no longer connected, entries are refused and an operator is
    told, instead of polls that fail in silence for ever."""
    venue = bybit_venue
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"})))
    alerts = []
    cf.bus.subscribe(lambda events: alerts.extend(e for e in events if isinstance(e, Alert)))
    cf.create_profile("p", "5000")
    for path in ("/v5/account/wallet-balance", "/v5/market/instruments-info"):
        venue.fault(path, "reject", code=10003, msg="API key is invalid.", times=10**6)
    [lost] = wait(lambda: [a for a in alerts if a.kind == "connection_lost"], 15)
    assert "key" in lost.reason
    assert cf.trading.accounts.status["live"].state != "CONNECTED"


def test_a_reconcile_asked_while_another_is_under_way_answers_from_a_cut_of_its_own(
        make_system, sqlite_url, bybit_venue, venue_keys):
    """The first reconcile's cut is under way (its balance read held, then lost) when the
    second is asked, after the venue's balance changed: the second is answered by a cut
    taken after it was asked, never by the first's report or failure."""
    import threading

    from capflow.actors.model.errors import Unavailable

    venue = bybit_venue
    cf = connected(make_system(sqlite_url, simulator={"symbols": {}},
                               brokers=live_brokers(venue, reconcile_every_s=0)))
    status = cf.trading.accounts.status["live"]
    wait(lambda: status.last_reconcile is not None)
    venue.fault("/v5/account/wallet-balance", "lose", delay=0.8)
    seen = len(venue.requests("/v5/account/wallet-balance"))
    first = {}

    def ask_first():
        try:
            first["report"] = cf.account_reconcile("live")
        except Unavailable as exc:
            first["error"] = exc

    t = threading.Thread(target=ask_first)
    t.start()
    wait(lambda: len(venue.requests("/v5/account/wallet-balance")) > seen)  # under way
    venue.set_balance("ETH", "2")  # coins capflow holds no position in
    report = cf.account_reconcile("live")
    t.join(30)
    assert "error" in first  # the first cut's balance read was lost
    assert report["differences"] == 1, report
