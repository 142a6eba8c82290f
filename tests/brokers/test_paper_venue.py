"""A paper account on a venue's public market data (``market_data = "bybit"``), against the
Bybit emulator: it fills by the paper broker's rules on the venue's bid / ask, its
take-profit / stop-loss trigger on the venue's prices, its entries obey the venue's
instrument rules, stale prices refuse entries, the venue being away at start costs
nothing but the account's entries until it answers, a restart keeps working -- and no
key is read or signed request sent."""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

import pytest

from capflow.actors.alerts import Alert
from capflow.actors.model import messages as m
from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.settings import ConfigError
from capflow.brokers.events import Disconnected
from capflow.brokers.paper_venue import PaperVenueBroker

from .venue_kit import wait


@pytest.fixture
def venue(bybit_venue):
    """These tests are about a dry run on Bybit's public market data."""
    return bybit_venue


TICKERS = "/v5/market/tickers"


def paper_brokers(venue, symbols=None, **settings) -> dict:
    """The [brokers] section of one paper account, "dry", priced by `venue`."""
    account = {"currency": "USDT", "initial_cash": "10000",
               "symbols": symbols or {"BTCUSDT": "BTC/USDT"},
               "connect": {"base_delay_s": 0.05, "max_delay_s": 0.2, "max_attempts": 2},
               "settings": {"market_data": "bybit", "market_data_url": venue.url,
                            "timeout_s": 1, "price_interval_s": 0.05, "stale_after_s": 0.5,
                            "slippage_bps": 0, **settings}}
    return {"default_account": "dry", "accounts": {"dry": account}}


def state(cf) -> str:
    return cf.trading.accounts.status["dry"].state


def connected(cf):
    wait(lambda: state(cf) == "CONNECTED")
    return cf


@pytest.fixture
def start(make_system, sqlite_url, venue):
    def started():
        return connected(make_system(sqlite_url, brokers=paper_brokers(venue)))

    return started


@pytest.fixture
def dry(start):
    cf = start()
    cf.create_profile("p", "5000")
    return cf


def _positions(cf, status):
    return cf.trading.list_positions("p", status=status)[0]


def _open(cf, sid="A", price="30000.10", **extra):
    a = cf.signal("p", "BTCUSDT", "BUY", price, qty="0.01", signal_id=sid, **extra)
    assert a["risk_ok"], a
    return wait(lambda: _positions(cf, "OPEN"))[0]


def _no_private_request(venue) -> None:
    seen = venue.requests()
    assert seen
    for r in seen:
        assert r.header("X-BAPI-API-KEY") is None and r.header("X-BAPI-SIGN") is None, r
        assert r.path.startswith("/v5/market/"), r.path


def test_the_account_is_paper_on_the_venue_prices_with_no_key(dry, venue, monkeypatch):
    assert dry.trading.accounts.mode == "paper"  # BROKER_MODE paper: no live account
    assert "BTCUSDT" not in dry.trading.sim.symbols().get(5)
    # the venue's I/O is the account's own worker thread's, not its manager's mailbox
    assert "prices-dry" in {t.name for t in threading.enumerate()}
    venue.set_price("BTCUSDT", "31000.00", "31000.20", last="31000.10")
    tick = wait(lambda: (t := dry.trading.board.get("BTCUSDT")) and t.bid == D("31000.00")
                and t)
    assert (tick.ask, tick.last) == (D("31000.20"), D("31000.10"))
    dry.advance(3)  # the simulator's steps leave the venue's symbol alone
    assert dry.trading.price("BTCUSDT").bid == D("31000.00")
    _no_private_request(venue)


def test_a_signal_fills_at_the_venue_ask_and_nothing_reaches_the_venue(dry, venue):
    venue.set_price("BTCUSDT", "30000.00", "30000.10")
    p = _open(dry)
    assert (p.qty_open, p.entry_price) == (D("0.01"), D("30000.10"))  # a BUY at the ask
    led = dry.ledger("p")
    assert led.fees == D("0.13")  # the paper taker fee 0.0004 of 300.001, rounded up
    assert not venue.orders()  # paper: the venue never sees an order
    _no_private_request(venue)


def test_the_size_the_venue_shows_at_its_ask_is_what_each_tick_fills(dry, venue):
    filled: list[m.OrderFilled] = []
    dry.bus.subscribe(lambda events: filled.extend(
        e for e in events if isinstance(e, m.OrderFilled)))
    venue.set_price("BTCUSDT", "30000.00", "30000.10", bid_size="5", ask_size="0.004")
    wait(lambda: (t := dry.trading.board.get("BTCUSDT")) and t.liquidity == D("0.004"))
    a = dry.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    assert a["risk_ok"], a
    [p] = wait(lambda: [p for p in _positions(dry, "OPEN") if p.qty_open == D("0.01")])
    assert [e.fill.qty for e in filled] == [D("0.004"), D("0.004"), D("0.002")]
    assert p.entry_price == D("30000.10")


@pytest.mark.parametrize(("bid", "ask", "reason"), [("30700.00", "30700.10", "tp"),
                                                    ("29600.00", "29600.10", "sl")])
def test_take_profit_and_stop_loss_trigger_on_the_venue_price(dry, venue, bid, ask, reason):
    p = _open(dry, tp_pct="2", sl_pct="1")
    assert p.tp_price is not None and p.sl_price is not None
    venue.set_price("BTCUSDT", "30300.00", "30300.10")  # between the levels: nothing
    wait(lambda: (t := dry.trading.board.get("BTCUSDT")) and t.bid == D("30300.00"))
    time.sleep(0.2)
    assert _positions(dry, "OPEN")
    venue.set_price("BTCUSDT", bid, ask)
    [closed] = wait(lambda: _positions(dry, "CLOSED"))
    assert (closed.close_reason, closed.exit_price) == (reason, D(bid))  # a long at the bid
    assert not venue.orders()
    _no_private_request(venue)


def test_entries_obey_the_venue_lot_step_and_minimums(dry, venue):
    a = dry.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.0100009", signal_id="A")
    assert a["risk_ok"], a
    assert a["qty"] == D("0.01")  # down to the venue's lot step 0.000001
    tiny = dry.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.0000479", signal_id="T")
    assert (tiny["risk_ok"], tiny["risk_reason"]) == (False, "VENUE_MIN_QTY")
    short = dry.signal("p", "BTCUSDT", "SELL", "30000.00", qty="0.01", signal_id="S")
    assert (short["risk_ok"], short["risk_reason"]) == (False, "VENUE_NO_SHORT")
    unlisted = dry.signal("p", "DOGEUSDT", "BUY", "10", qty="100", signal_id="D")
    assert (unlisted["risk_ok"], unlisted["risk_reason"]) == (False, "VENUE_UNKNOWN_SYMBOL")
    venue.set_price("BTCUSDT", "10.00", "10.01")  # 0.05 at 10.01: below 1 USDT notional
    wait(lambda: (t := dry.trading.board.get("BTCUSDT")) and t.ask == D("10.01"))
    small = dry.signal("p", "BTCUSDT", "BUY", "10.01", qty="0.05", signal_id="N")
    assert (small["risk_ok"], small["risk_reason"]) == (False, "VENUE_MIN_NOTIONAL")


def test_stale_prices_refuse_entries_alert_and_recover(dry, venue):
    alerts: list[Alert] = []
    dry.bus.subscribe(lambda events: alerts.extend(e for e in events if isinstance(e, Alert)))
    p = _open(dry, tp_pct="2", sl_pct="1")
    venue.fault(TICKERS, "http", status=503, times=10**6)
    wait(lambda: dry.trading.accounts.status["dry"].prices.stale())
    [alert] = wait(lambda: [a for a in alerts if a.kind == "prices_stale"])
    assert (alert.scope, alert.target) == ("account", "dry")
    assert alert.details["unwatched"] == [p.position_id]
    refused = dry.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="B")
    assert (refused["risk_ok"], refused["risk_reason"]) == (False, "STALE_PRICES")
    venue.clear_faults()
    wait(lambda: not dry.trading.accounts.status["dry"].prices.stale())
    again = dry.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="C")
    assert again["risk_ok"], again


def test_a_venue_away_at_start_stops_nothing_and_the_account_recovers(make_system,
                                                                      sqlite_url, venue):
    venue.fault("*", "http", status=503, times=10**6)
    cf = make_system(sqlite_url, brokers=paper_brokers(venue))  # the server starts
    cf.create_profile("p", "5000")
    time.sleep(1.0)  # past connect.max_attempts (2): still trying, never given up
    assert state(cf) in ("CONNECTING", "WAITING")
    refused = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    assert (refused["risk_ok"], refused["risk_reason"]) == (False, "VENUE_RULES_UNKNOWN")
    assert not _positions(cf, "OPEN")
    venue.clear_faults()
    connected(cf)
    _open(cf, sid="B")
    _no_private_request(venue)


def test_a_restart_keeps_working(dry, start, venue):
    p = _open(dry, tp_pct="2", sl_pct="1")
    dry.stop()
    cf = start()
    [kept] = _positions(cf, "OPEN")
    assert kept.position_id == p.position_id
    venue.set_price("BTCUSDT", "30700.00", "30700.10")
    [closed] = wait(lambda: _positions(cf, "CLOSED"))
    assert (closed.close_reason, closed.exit_price) == ("tp", D("30700.00"))
    _no_private_request(venue)


def test_a_symbol_the_venue_does_not_list_stops_the_account_naming_the_setting(
        make_system, sqlite_url, venue):
    cf = make_system(sqlite_url, brokers=paper_brokers(venue, symbols={"DOGEUSDT":
                                                                       "DOGE/USDT"}))
    wait(lambda: state(cf) == "GAVE_UP")
    [gone] = [e for e in cf.trading.accounts.status["dry"].connection_events
              if isinstance(e, Disconnected)]
    assert "[brokers.accounts.dry] symbols" in gone.reason and "DOGE/USDT" in gone.reason
    cf.create_profile("p", "100")  # the server goes on


@pytest.mark.parametrize(("settings", "named"), [
    ({"market_data": "nosuchvenue"}, "market_data = 'nosuchvenue'"),
    ({"api_key_env": "K"}, "api_key_env"),
    ({"stale_after_s": 0}, "stale_after_s"),
    ({"stale_after_s": float("inf")}, "stale_after_s"),  # TOML has inf and nan
    ({"price_interval_s": float("nan")}, "price_interval_s"),
    ({"timeout_s": float("inf")}, "timeout_s"),
    ({"market_data": "bitvavo", "market_data_sandbox": True}, "market_data_sandbox"),
    ({"taker_fee": "x"}, "taker_fee"),
])
def test_bad_settings_stop_start_up_naming_the_setting(make_system, sqlite_url, venue,
                                                        settings, named):
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        make_system(sqlite_url, brokers=paper_brokers(venue, **settings))
    assert not {t.name for t in threading.enumerate()} - before  # nothing half-started
    assert not venue.requests()


def test_a_paper_account_with_market_data_is_served_by_the_venue_variant(venue):
    from capflow.brokers.config import AccountConfig
    from capflow.brokers.paper import PaperBroker

    cfg = AccountConfig(settings={"market_data": "bybit"})
    assert PaperBroker.variant(cfg) is PaperVenueBroker
    assert PaperBroker.variant(AccountConfig()) is PaperBroker


def test_a_reduce_neither_exits_nor_leaves_less_than_the_venue_minimum(dry, venue):
    """Bybit's BTC/USDT takes no order below 0.000048: a reduce of less, or one that
    would leave less open (an exit of it the venue would refuse), is refused; the
    position stays as it was."""
    p = _open(dry)
    for args in ({"qty": "0.00001"}, {"qty": "0.00999"}, {"fraction": "0.999"}):
        with pytest.raises(InvalidArgument) as err:
            dry.reduce_position("p", p.position_id, **args)
        assert err.value.field in args, args
    _, q, closing = dry.reduce_position("p", p.position_id, qty="0.004")
    assert (q, closing) == (D("0.004"), False)
    left = wait(lambda: [x for x in _positions(dry, "OPEN") if x.qty_open == D("0.006")])
    assert left[0].position_id == p.position_id
