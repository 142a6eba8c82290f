"""The ccxt spot adapter against the venue emulators (tests/venue), each test once on
Bybit v5 and once on Bitget v2 spot, with the real ccxt signing the requests and
parsing the answers: what the venue receives, and what the adapter reports when answers
are lost, ids repeat, fills come in pieces or late, and capflow restarts with an order
in flight."""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal as D

import pytest

from capflow.actors.model.clock import Clock
from capflow.actors.model.settings import ConfigError
from capflow.bench.venues.bitget import BitgetVenue
from capflow.brokers.base import CONNECTED, GAVE_UP
from capflow.brokers.ccxt_settings import entry_client_id, exit_client_id
from capflow.brokers.ccxt_venue import CcxtSpotBroker
from capflow.brokers.config import AccountConfig, ConnectConfig
from capflow.brokers.events import (
    BrokerOrder,
    BrokerPosition,
    Disconnected,
    EntryFilled,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PositionExited,
)

from .venue_kit import (
    PASSPHRASE_ENV,
    VENUES,
    credentials,
    exchange,
    order_sent,
    path,
    sent,
)

ADAPTER = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
ORDER_ID = "ord_18e9f247aa84e7674664058da23e"


@pytest.fixture(params=sorted(VENUES))
def venue(request):
    with VENUES[request.param](balances={"USDT": "10000"}) as v:
        v.set_price("BTCUSDT", "30000.00", "30000.10")
        yield v


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("T_BYBIT_KEY", "venue-key")
    monkeypatch.setenv("T_BYBIT_SECRET", "venue-secret")
    monkeypatch.setenv(PASSPHRASE_ENV, "venue-pass")


def config(venue, **settings) -> AccountConfig:
    names = credentials(venue) if venue else {
        "exchange": "bybit", "api_key_env": "T_BYBIT_KEY", "api_secret_env": "T_BYBIT_SECRET"}
    base = {**names, "urls": venue.urls if venue else {}, "timeout_s": 1,
            "poll_interval_s": 0.05}
    return AccountConfig(adapter=ADAPTER, currency="USDT", settings={**base, **settings},
                         connect=ConnectConfig(max_attempts=2, base_delay_s=0.01,
                                               jitter=0))


class Harness:
    """The adapter as its account manager drives it: `step()` on its own (the test's)
    thread whenever the worker wakes it."""

    def __init__(self, cfg: AccountConfig):
        self.events: list = []
        self.woke = threading.Event()
        self.b = CcxtSpotBroker("live", cfg, clock=Clock(), emit=self.events.append,
                                money_places=2)
        self.b.wake = self.woke.set
        self.b.init()
        self.b.start()

    def pump(self, until, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            self.woke.wait(0.05)
            self.woke.clear()
            self.b.step()
            got = until()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events: {self.events}")

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def connected(self):
        self.pump(lambda: self.b.connection.state in (CONNECTED, GAVE_UP))
        return self

    def stop(self):
        self.b.shutdown()


@pytest.fixture
def harness(venue, keys):
    made = []

    def make(**settings) -> Harness:
        h = Harness(config(venue, **settings))
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def entry(qty="0.01", *, order_id=ORDER_ID, type="MARKET", price=None,
          max_price="30100.00", filled="0") -> BrokerOrder:
    return BrokerOrder(order_id=order_id, profile_id="p1", symbol="BTCUSDT", side="BUY",
                       type=type, qty=D(qty), price=None if price is None else D(price),
                       position_id=order_id.replace("ord_", "pos_"),
                       max_price=D(max_price), filled_qty=D(filled))


def creates(venue) -> list:
    return sent(venue, "create")


# -- connecting -----------------------------------------------------------------------

def test_it_connects_and_publishes_the_venue_rules_the_entry_flow_applies(harness, venue):
    h = harness().connected()
    assert h.b.connection.state == CONNECTED
    rule = h.b.venue_rules.rule("BTCUSDT")
    assert (rule.venue_symbol, rule.qty_step, rule.price_tick) == ("BTC/USDT",
                                                                   D("0.000001"), D("0.01"))
    assert rule.min_qty == D("0.000048") and rule.min_notional == D("1")
    # signed requests went out; the key is never in what the adapter shows
    signed = sent(venue, "balance")[0]
    assert signed.status == 200 and (signed.header("X-BAPI-SIGN") or signed.header(
        "ACCESS-SIGN"))
    assert "venue-secret" not in repr(vars(h.b)) and "venue-key" not in repr(vars(h.b))
    assert h.b.account_info().free_cash == D("10000.00")


def test_a_missing_key_stops_the_account_naming_the_setting(venue, monkeypatch):
    monkeypatch.delenv("T_BYBIT_KEY", raising=False)
    monkeypatch.setenv("T_BYBIT_SECRET", "venue-secret")
    h = Harness(config(venue)).connected()
    try:
        assert h.b.connection.state == GAVE_UP
        [gone] = h.of(Disconnected)
        assert "api_key_env" in gone.reason and "T_BYBIT_KEY" in gone.reason
        assert gone.attempts == 1  # no retry can mend it
        assert not venue.requests()  # nothing half-started at the venue
    finally:
        h.stop()


def test_a_rejected_key_stops_the_account_naming_the_setting(venue, monkeypatch):
    monkeypatch.setenv("T_BYBIT_KEY", "someone-else")
    monkeypatch.setenv("T_BYBIT_SECRET", "venue-secret")
    monkeypatch.setenv(PASSPHRASE_ENV, "venue-pass")
    h = Harness(config(venue)).connected()
    try:
        [gone] = h.of(Disconnected)
        assert "api_key_env" in gone.reason and "rejected" in gone.reason
        assert "venue-secret" not in gone.reason and "someone-else" not in gone.reason
    finally:
        h.stop()


def test_a_bitget_passphrase_is_sent_never_shown_and_its_absence_named(monkeypatch,
                                                                       tmp_path):
    with BitgetVenue(balances={"USDT": "10000"}) as venue:
        monkeypatch.setenv("T_BYBIT_KEY", "venue-key")
        monkeypatch.setenv("T_BYBIT_SECRET", "venue-secret")
        h = Harness(config(venue)).connected()  # the passphrase variable is not set
        try:
            [gone] = h.of(Disconnected)
            assert "api_passphrase_env" in gone.reason and PASSPHRASE_ENV in gone.reason
            assert gone.attempts == 1 and not venue.requests()
        finally:
            h.stop()
        key_file = tmp_path / "bitget.json"
        key_file.write_text('{"api_key": "venue-key", "secret": "venue-secret", '
                            '"passphrase": "venue-pass"}')
        key_file.chmod(0o600)
        settings = {k: v for k, v in config(venue).settings.items() if "_env" not in k}
        h = Harness(AccountConfig(adapter=ADAPTER, currency="USDT",
                                  settings={**settings, "key_file": str(key_file)},
                                  connect=config(venue).connect)).connected()
        try:
            assert h.b.connection.state == CONNECTED
            assert sent(venue, "balance")[0].header("ACCESS-PASSPHRASE") == "venue-pass"
            assert "venue-pass" not in repr(vars(h.b)) and "venue-pass" not in str(h.events)
        finally:
            h.stop()
        monkeypatch.setenv(PASSPHRASE_ENV, "not-the-passphrase")
        h = Harness(config(venue)).connected()
        try:
            [gone] = h.of(Disconnected)
            assert "api_passphrase_env" in gone.reason and "rejected" in gone.reason
            assert "not-the-passphrase" not in gone.reason
        finally:
            h.stop()


def test_an_unknown_symbol_stops_the_account_naming_the_setting(venue, keys):
    cfg = config(venue)
    cfg = AccountConfig(adapter=ADAPTER, currency="USDT", settings=cfg.settings,
                        symbols={"DOGEUSDT": "DOGE/USDT"}, connect=cfg.connect)
    h = Harness(cfg).connected()
    try:
        [gone] = h.of(Disconnected)
        assert "symbols" in gone.reason and "DOGE/USDT" in gone.reason
        assert not creates(venue)
    finally:
        h.stop()


def test_bad_settings_are_refused_at_load_naming_the_setting():
    for settings, named in (({"exchange": "nosuchvenue", "api_key_env": "A",
                              "api_secret_env": "B"}, "exchange"),
                            ({"exchange": "bybit"}, "api_key_env"),
                            ({"exchange": "bybit", "key_file": "/k", "colour": 1}, "colour"),
                            ({"exchange": "bitget", "api_key_env": "A", "api_secret_env": "B"},
                             "api_passphrase_env")):
        with pytest.raises(ConfigError, match=named):
            CcxtSpotBroker.check_config("live", AccountConfig(adapter=ADAPTER,
                                                              settings=settings))


# -- orders ---------------------------------------------------------------------------

def test_a_market_entry_goes_out_as_a_limit_ioc_at_the_reserved_price(harness, venue):
    h = harness().connected()
    h.b.submit_order(entry("0.01", max_price="30050.00"))
    [fill] = h.pump(lambda: h.of(EntryFilled))
    [order] = [order_sent(r) for r in creates(venue)]
    assert order["client_id"] == entry_client_id(ORDER_ID)
    assert len(order["client_id"]) <= 36
    assert (order["type"], order["tif"]) == ("limit", "IOC")
    assert (order["side"], D(order["price"]), D(order["qty"])) == (
        "buy", D("30050.00"), D("0.01"))
    assert h.of(OrderAccepted)
    # Bybit and Bitget spot take a buy's fee in the coin bought: the position holds the rest
    assert fill.qty == D("0.01") and fill.price == D("30000.10")
    assert fill.fee_qty == D("0.00001") and fill.fee == 0
    assert fill.fill_id == f"{exchange(venue)}:{venue.executions()[0].exec_id}"
    [p] = h.b.portfolio()
    assert p.qty == D("0.00999")


def test_an_ioc_entry_above_the_market_is_canceled_for_its_rest(harness, venue):
    h = harness().connected()
    h.b.submit_order(entry("0.01", max_price="29000.00"))  # the ask is above it
    [canceled] = h.pump(lambda: h.of(OrderCanceled))
    assert "immediate-or-cancel" in canceled.reason
    assert not h.of(EntryFilled) and not h.of(OrderRejected)


def test_a_refusal_the_venue_states_is_a_rejection(harness, venue):
    h = harness().connected()
    venue.fault(path(venue, "create"), "reject", code=170131, msg="Insufficient balance.")
    h.b.submit_order(entry())
    [rejected] = h.pump(lambda: h.of(OrderRejected))
    assert "InsufficientFunds" in rejected.reason


def test_an_order_placed_with_its_answer_lost_is_found_and_not_sent_twice(harness, venue):
    h = harness().connected()
    venue.fault(path(venue, "create"), "lose", delay=1.5)  # past the client's 1 s timeout
    h.b.submit_order(entry())
    h.pump(lambda: h.of(EntryFilled))
    assert len(venue.orders()) == 1
    assert not h.of(OrderRejected)  # a lost answer is never a rejection
    # it was found by its client order id
    looked = sent(venue, "open")
    assert any(entry_client_id(ORDER_ID) in r.query.values() for r in looked)


def test_an_order_the_venue_never_got_is_sent_again_with_the_same_id(harness, venue):
    h = harness(lookups_before_resend=1).connected()
    venue.fault(path(venue, "create"), "http", status=503)  # not placed; nothing known
    h.b.submit_order(entry())
    h.pump(lambda: h.of(EntryFilled))
    orders = [order_sent(r) for r in creates(venue)]
    assert len(orders) == 2 and len(venue.orders()) == 1
    assert {o["client_id"] for o in orders} == {entry_client_id(ORDER_ID)}
    assert not h.of(OrderRejected)


def test_a_duplicate_id_answer_means_the_order_exists(harness, venue):
    h = harness().connected()
    venue.auto_match = False
    venue.set_price("BTCUSDT", "30000.00", "30000.10", ask_size="0")
    limit = entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00")
    h.b.submit_order(limit)
    h.pump(lambda: h.of(OrderAccepted))
    # sent again with the same id (as after a lost answer): the venue says duplicate
    h.b.engine.live.clear()
    h.b.submit_order(limit)
    h.pump(lambda: len(creates(venue)) == 2 and not h.b.worker._out and
           h.b.engine.live.get(ORDER_ID) is not None and
           h.b.engine.live[ORDER_ID].state == "OPEN")
    assert creates(venue)[1].ret_code in (170141, "43122")  # Bybit's, Bitget's duplicate
    assert len(venue.orders()) == 1 and not h.of(OrderRejected)
    venue.fill(entry_client_id(ORDER_ID), "0.004")
    [fill] = h.pump(lambda: h.of(EntryFilled))
    assert fill.qty == D("0.004")


def test_partial_fills_over_several_polls_are_booked_once_each(harness, venue):
    h = harness().connected()
    venue.auto_match = False
    limit = entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00")
    h.b.submit_order(limit)
    h.pump(lambda: h.of(OrderAccepted))
    cid = entry_client_id(ORDER_ID)
    venue.fill(cid, "0.003")
    h.pump(lambda: len(h.of(EntryFilled)) == 1)
    time.sleep(0.2)  # several polls see the same trade: it is booked once
    h.pump(lambda: True)
    venue.fill(cid, "0.002")
    venue.fill(cid, "0.005")
    h.pump(lambda: len(h.of(EntryFilled)) == 3)
    time.sleep(0.2)
    h.pump(lambda: True)
    fills = h.of(EntryFilled)
    assert [f.qty for f in fills] == [D("0.003"), D("0.002"), D("0.005")]
    assert len({f.fill_id for f in fills}) == 3
    assert not h.of(OrderCanceled)


def test_an_order_filled_in_more_pieces_than_a_page_of_trades_is_booked_whole(harness, venue):
    # Bybit answers an order's executions 50 a page (100 at most): every page is read
    h = harness().connected()
    venue.auto_match = False
    h.b.submit_order(entry("0.013", type="LIMIT", price="29000.00", max_price="29000.00"))
    h.pump(lambda: h.of(OrderAccepted))
    cid = entry_client_id(ORDER_ID)
    for _ in range(130):
        venue.fill(cid, "0.0001")
    h.pump(lambda: sum((f.qty for f in h.of(EntryFilled)), D(0)) >= D("0.013"), 30)
    fills = h.of(EntryFilled)
    assert len(fills) == 130 and len({f.fill_id for f in fills}) == 130
    assert sum((f.qty for f in fills), D(0)) == D("0.013")


def test_a_fill_after_the_cancel_was_asked_is_booked_before_the_cancel(harness, venue):
    h = harness().connected()
    venue.auto_match = False
    venue.defer_cancels = True
    h.b.submit_order(entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00"))
    h.pump(lambda: h.of(OrderAccepted))
    assert h.b.cancel_order(ORDER_ID, "halt")
    h.pump(lambda: sent(venue, "cancel"))
    venue.fill(entry_client_id(ORDER_ID), "0.004")  # the venue fills before canceling
    time.sleep(0.2)
    venue.finish_cancels()
    h.pump(lambda: h.of(OrderCanceled))
    kinds = [type(e).__name__ for e in h.events if isinstance(e, EntryFilled | OrderCanceled)]
    assert kinds == ["EntryFilled", "OrderCanceled"]
    assert h.of(OrderCanceled)[0].reason == "halt"


def test_a_restart_with_an_order_in_flight_leaves_exactly_one_order(harness, venue):
    h = harness().connected()
    venue.fault(path(venue, "create"), "lose", delay=1.5)
    venue.auto_match = False
    h.b.submit_order(entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00"))
    time.sleep(0.3)  # placed at the venue; the answer not back: capflow stops here
    h.stop()
    again = harness().connected()
    recorded = entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00")
    again.b.restore([recorded], [])
    again.pump(lambda: again.b.engine.live.get(ORDER_ID) is not None
               and again.b.engine.live[ORDER_ID].state == "OPEN")
    time.sleep(0.3)
    again.pump(lambda: True)
    assert len(venue.orders()) == 1 and len(creates(venue)) == 1
    venue.fill(entry_client_id(ORDER_ID), "0.01")
    [fill] = again.pump(lambda: again.of(EntryFilled))
    assert fill.qty == D("0.01")


def test_a_restored_order_not_at_the_venue_is_sent_once_with_its_id(harness, venue):
    h = harness(lookups_before_resend=1).connected()
    h.b.restore([entry()], [])  # recorded, then capflow stopped before it was sent
    h.pump(lambda: h.of(EntryFilled))
    [order] = [order_sent(r) for r in creates(venue)]
    assert order["client_id"] == entry_client_id(ORDER_ID)


def test_a_restored_order_skips_the_fills_booked_before_the_restart(harness, venue):
    h = harness().connected()
    venue.auto_match = False
    limit = entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00")
    h.b.submit_order(limit)
    h.pump(lambda: h.of(OrderAccepted))
    venue.fill(entry_client_id(ORDER_ID), "0.004")
    h.pump(lambda: h.of(EntryFilled))
    h.stop()
    again = harness().connected()
    again.b.restore([entry("0.01", type="LIMIT", price="29000.00", max_price="29000.00",
                           filled="0.004")], [])
    venue.fill(entry_client_id(ORDER_ID), "0.006")
    [fill] = again.pump(lambda: again.of(EntryFilled))
    time.sleep(0.2)
    again.pump(lambda: True)
    assert [f.qty for f in again.of(EntryFilled)] == [D("0.006")] and fill


def test_an_exit_sells_the_position_rounded_to_the_lot_step_and_books_the_dust(harness,
                                                                              venue):
    h = harness().connected()
    venue.set_balance("BTC", "1")
    pos = BrokerPosition(position_id="pos_18e9f247aa84e7674664058da23e", profile_id="p1",
                         symbol="BTCUSDT", side="BUY", qty=D("0.0099994"),
                         entry_price=D("30000"))
    h.b.restore([], [pos])
    assert h.b.close_position(pos.position_id)
    exits = h.pump(lambda: len(h.of(PositionExited)) == 2 and h.of(PositionExited))
    [request] = creates(venue)
    order = order_sent(request)
    assert order["client_id"] == exit_client_id(pos.position_id, 1)
    assert (order["side"], order["type"], D(order["qty"])) == ("sell", "market",
                                                               D("0.009999"))
    assert "reduceOnly" not in request.body  # spot has no reduce-only order
    assert [e.qty for e in exits] == [D("0.009999"), D("0.0000004")]
    assert exits[1].fee == 0 and h.b.dust == {"BTC": D("0.0000004")}
    assert not h.b.portfolio()


# -- the real venue --------------------------------------------------------------------

_TESTNET = os.environ.get("BYBIT_TESTNET_KEY") and os.environ.get("BYBIT_TESTNET_SECRET")


@pytest.mark.skipif(not _TESTNET, reason="SMOKE TEST AGAINST THE REAL BYBIT TESTNET NOT RUN: "
                    "set BYBIT_TESTNET_KEY and BYBIT_TESTNET_SECRET (a testnet key) to run it")
def test_smoke_against_the_bybit_testnet():
    cfg = AccountConfig(adapter=ADAPTER, currency="USDT", settings={
        "exchange": "bybit", "api_key_env": "BYBIT_TESTNET_KEY",
        "api_secret_env": "BYBIT_TESTNET_SECRET", "sandbox": True, "timeout_s": 10,
        "poll_interval_s": 2}, connect=ConnectConfig(max_attempts=3, base_delay_s=1))
    h = Harness(cfg)
    try:
        h.pump(lambda: h.b.connection.state in (CONNECTED, GAVE_UP), timeout=60)
        assert h.b.connection.state == CONNECTED, h.events
        rule = h.b.venue_rules.rule("BTCUSDT")
        assert rule.venue_symbol == "BTC/USDT" and rule.qty_step > 0
        assert h.b.account_info().currency == "USDT"
    finally:
        h.stop()
