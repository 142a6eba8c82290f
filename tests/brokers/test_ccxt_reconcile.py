"""Reconciling a live account with the venue emulators: fills missed while capflow was
down are booked once (and never again, across reconciles and restarts), orders and
balances capflow cannot explain put the account in REDUCE_ONLY with an alert and are
shown with both sides by `account.reconcile`, a baseline explains coins capflow does not
manage, orders in flight are not differences; `account.get` through a real server."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from decimal import Decimal as D

import pytest

from capflow import cli_account, run
from capflow.actors.alerts import Alert
from capflow.brokers.ccxt_settings import entry_client_id
from capflow.protocol.client import Client, ClientError
from capflow.protocol.server import Server

from .venue_kit import (
    PASSPHRASE_ENV,
    connected,
    credentials,
    live_brokers,
    path,
    sent,
    wait,
)


@pytest.fixture
def start(make_system, sqlite_url, venue, venue_keys):
    """Start a capflow on the venue (the same database each time): ``start(**settings)``."""

    def make(server: bool = False, **extra):
        sections = {"server": {"endpoint": "tcp://127.0.0.1:*",
                               "events_endpoint": "tcp://127.0.0.1:*"}} if server else {}
        cf = connected(make_system(sqlite_url, simulator={"symbols": {}},
                                   brokers=live_brokers(venue, **{"reconcile_every_s": 0,
                                                                  **extra}),
                                   **sections))
        # the reconcile at start has run
        wait(lambda: cf.trading.accounts.status["live"].last_reconcile is not None)
        return cf

    return make



def fills(sqlite_url: str) -> list[tuple]:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as c:
        return c.execute("select fill_id, qty from fills order by fill_id").fetchall()


def alerts_of(cf) -> list[Alert]:
    got: list[Alert] = []
    cf.bus.subscribe(lambda events: got.extend(e for e in events if isinstance(e, Alert)))
    return got


def test_a_fill_made_while_capflow_was_down_is_booked_once(start, venue, sqlite_url):
    cf = start()
    cf.create_profile("p", "5000")
    order = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                            price="29000").result
    cid = entry_client_id(order.order_id)
    wait(lambda: venue.order(cid))
    venue.fill(cid, "0.004")  # seen while running
    wait(lambda: len(fills(sqlite_url)) == 1)
    cf.stop()
    venue.fill(cid, "0.006")  # while capflow is down: the order fills
    cf = start()
    wait(lambda: len(fills(sqlite_url)) == 2)
    report = cf.account_reconcile("live")
    assert report["differences"] == 0, report
    assert report["missed_fills"] == []
    [btc] = [b for b in report["balances"] if b["coin"] == "BTC"]
    # 0.01 bought, 0.00001 kept by the venue as its fee: the position holds the rest
    assert (btc["venue"]["total"], btc["capflow"], btc["status"]) == (
        D("0.00999"), D("0.00999"), "ok")
    cf.stop()
    cf = start()  # and not again at the next restart
    report = cf.account_reconcile("live")
    assert report["differences"] == 0 and report["missed_fills"] == []
    assert [q for _f, q in fills(sqlite_url)] == [D("0.004"), D("0.006")] or len(
        fills(sqlite_url)) == 2
    assert cf.trading.safety.account_state("live") is None


def test_a_fill_of_an_exit_the_restart_did_not_follow_is_booked_by_the_reconcile(
        start, venue, sqlite_url):
    """A position's second exit filled, its answer lost, and capflow stopped: at the
    restart the close is looked up as its first exit (which the venue refused), so only
    the reconcile finds the second one's fill, and books it once; the first exit is not
    sent again (it would sell twice)."""
    cf = start(lookups_before_resend=1000)
    cf.create_profile("p", "5000")
    a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    wait(lambda: cf.ledger("p").reserved_for_positions > 0)
    venue.fault(path(venue, "create"), "reject", code=170131, msg="Insufficient balance.")
    pid = a["position_id"]
    cf.close_position("p", pid)
    wait(lambda: len(sent(venue, "create")) == 2)
    venue.set_price("BTCUSDT", "30100.00", "30100.10")
    venue.fault(path(venue, "create"), "lose", delay=0)  # the venue sells; the answer is lost
    venue.fault(path(venue, "open"), "http", status=503, times=10_000)  # no lookups
    # asked again until the adapter has heard that the first exit was refused
    wait(lambda: cf.trading.accounts.ask("live", _close(pid)) and
         len(sent(venue, "create")) == 3)
    sold = [o for o in venue.orders() if o.side == "Sell"]
    assert [o.status for o in sold] == ["Filled"]
    before = len(fills(sqlite_url))
    cf.stop()
    assert len(fills(sqlite_url)) == before  # the exit's fill was never booked
    venue.clear_faults()
    venue.set_balance("BTC", "1")  # other coins of the base: a resend would sell them
    cf = start(baseline={"BTC": "1"})
    report = wait(lambda: _booked(cf))
    [missed] = report["missed_fills"]
    assert (missed["booked_as"], missed["position_id"]) == ("exit", pid)
    wait(lambda: len(fills(sqlite_url)) == before + 1)
    again = cf.account_reconcile("live")
    assert again["missed_fills"] == [] and again["differences"] == 0, again
    assert len(fills(sqlite_url)) == before + 1
    time.sleep(0.3)  # several polls: the first exit is looked up no more
    assert len([r for r in sent(venue, "create")]) == 3
    assert cf.trading.safety.account_state("live") is None


def _close(position_id: str):
    from capflow.actors.account_messages import Close

    return Close("p", position_id)


def _booked(cf):
    last = cf.trading.accounts.status["live"].last_reconcile
    return last is not None and last.report.get("missed_fills") and last.report


def test_an_order_at_the_venue_capflow_did_not_send_is_reported(start, venue):
    cf = start()
    alerts = alerts_of(cf)
    client = venue.ccxt(timeout=2000)
    client.load_markets()
    client.create_order("BTC/USDT", "limit", "buy", "0.01", "29000",
                        {"clientOrderId": "by-hand-1"})
    report = cf.account_reconcile("live")
    [o] = report["unknown_orders"]
    assert (o["client_order_id"], o["side"], o["qty"]) == ("by-hand-1", "BUY", D("0.01"))
    assert report["differences"] == 1
    state = wait(lambda: cf.trading.safety.account_state("live"))
    assert (state.state, state.changed_by) == ("REDUCE_ONLY", "reconcile")
    [alert] = wait(lambda: [a for a in alerts if a.kind == "reconcile_difference"])
    assert alert.details["unknown_orders"][0]["client_order_id"] == "by-hand-1"


def test_every_page_of_the_venue_open_orders_is_read(start, venue):
    # Bybit answers open orders 20 a page by default (50 at most): none may go unseen
    venue.set_balance("USDT", "100000")
    cf = start()
    client = venue.ccxt(timeout=2000)
    client.load_markets()
    for i in range(60):
        client.create_order("BTC/USDT", "limit", "buy", "0.001", "29000",
                            {"clientOrderId": f"by-hand-{i}"})
    report = cf.account_reconcile("live")
    assert sorted(o["client_order_id"] for o in report["unknown_orders"]) == sorted(
        f"by-hand-{i}" for i in range(60))


def test_a_balance_that_disagrees_sets_reduce_only_and_shows_both_sides(start, venue):
    cf = start()
    alerts = alerts_of(cf)
    cf.create_profile("p", "5000")
    venue.set_balance("ETH", "2")  # coins capflow holds no position in
    report = cf.account_reconcile("live")
    [eth] = [b for b in report["balances"] if b["coin"] == "ETH"]
    assert eth["venue"]["total"] == D("2") and eth["capflow"] == 0
    assert (eth["difference"], eth["status"]) == (D("2"), "differs")
    assert report["differences"] == 1
    state = wait(lambda: cf.trading.safety.account_state("live"))
    assert (state.state, state.changed_by) == ("REDUCE_ONLY", "reconcile")
    [alert] = wait(lambda: [a for a in alerts if a.kind == "reconcile_difference"])
    assert alert.scope == "account" and alert.target == "live"
    assert "ETH venue 2 vs capflow 0" in alert.reason
    refused = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="B")
    assert not refused["risk_ok"]
    # the same differences again: no second alert
    cf.account_reconcile("live")
    assert len([a for a in alerts if a.kind == "reconcile_difference"]) == 1
    got = cf.account_get("live")
    assert got["last_reconcile"]["differences"] == 1


def test_a_baseline_explains_coins_capflow_does_not_manage(start, venue):
    venue.set_balance("ETH", "2")
    cf = start(baseline={"ETH": "2", "USDT": "4000"})
    report = cf.account_reconcile("live")
    assert report["differences"] == 0, report
    [eth] = [b for b in report["balances"] if b["coin"] == "ETH"]
    assert (eth["baseline"], eth["difference"], eth["status"]) == (D("2"), 0, "ok")
    # the account's capital is the venue's cash less its baseline
    assert report["capital"] == D("6000")
    assert cf.trading.accounts.status["live"].capital == D("6000")
    assert cf.trading.safety.account_state("live") is None


def test_the_capital_comes_from_the_venue_capped_by_max_live_capital(
        make_system, sqlite_url, venue, monkeypatch):
    monkeypatch.setenv("T_BYBIT_KEY", "venue-key")
    monkeypatch.setenv("T_BYBIT_SECRET", "venue-secret")
    monkeypatch.setenv(PASSPHRASE_ENV, "venue-pass")
    venue.set_balance("USDT", "300")  # config says 10,000; the venue has 300
    settings = {**credentials(venue), "urls": venue.urls, "timeout_s": 1,
                "poll_interval_s": 0.05}
    cf = make_system(sqlite_url, simulator={"symbols": {}}, brokers={
        "default_account": "live",
        "accounts": {"live": {"adapter": "capflow.brokers.ccxt_venue:CcxtSpotBroker",
                              "currency": "USDT", "initial_cash": "10000",
                              "max_live_capital": "100", "settings": settings}}})
    st = cf.trading.accounts.status["live"]
    wait(lambda: st.last_reconcile is not None)
    assert st.capital == D("300")
    got = cf.account_get("live")
    assert (got["capital"], got["max_live_capital"]) == (D("100"), D("100"))
    venue.set_balance("USDT", "50")
    cf.account_reconcile("live")
    assert cf.account_get("live")["capital"] == D("50")


def test_orders_in_flight_during_a_reconcile_are_not_differences(start, venue, sqlite_url):
    cf = start(lookups_before_resend=1000)
    cf.create_profile("p", "5000")
    # the venue fills the entry at once; its answer is lost after the client's timeout
    venue.fault(path(venue, "create"), "lose", delay=1.5)
    a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    wait(lambda: venue.order(entry_client_id(a["order_id"])))
    out = {}
    t = threading.Thread(target=lambda: out.update(r=cf.account_reconcile("live")))
    t.start()  # asked while the create is unanswered: its cut comes right after
    t.join(30)
    report = out["r"]
    assert report["differences"] == 0, report
    assert report["in_flight"] == [entry_client_id(a["order_id"])]
    [btc] = [b for b in report["balances"] if b["coin"] == "BTC"]
    assert (btc["venue"]["total"], btc["capflow"], btc["status"]) == (
        D("0.00999"), 0, "in_flight")
    # once looked up and booked, the coins agree
    wait(lambda: len(fills(sqlite_url)) == 1)
    report = cf.account_reconcile("live")
    assert report["differences"] == 0 and report["in_flight"] == []
    [btc] = [b for b in report["balances"] if b["coin"] == "BTC"]
    assert (btc["capflow"], btc["status"]) == (D("0.00999"), "ok")
    assert cf.trading.safety.account_state("live") is None


def test_account_get_and_reconcile_through_the_wire(start, venue, make_system, tmp_path):
    cf = start(server=True)
    server = Server(cf).start()
    try:
        with Client(server.endpoint, timeout_s=10, retries=1) as c:
            got = c.account_get("live")
            assert (got["mode"], got["connection"], got["currency"]) == (
                "live", "CONNECTED", "USDT")
            assert got["balances"]["USDT"] == {"total": "10000", "free": "10000",
                                               "locked": "0"}
            assert got["data_age_s"] is not None and got["data_age_s"] < 5
            assert got["last_reconcile"]["differences"] == 0
            assert got["max_live_capital"] is None and got["capital"] == "10000"
            report = c.account_reconcile("live")
            assert report["account_id"] == "live" and report["differences"] == 0
            with pytest.raises(ClientError) as nope:
                c.account_get("nope")
            assert nope.value.code == "NOT_FOUND"
        # the command line: both sides of a difference
        venue.set_balance("ETH", "2")
        out = io.StringIO()
        args = run._parser().parse_args(["account", "reconcile", "live", "--endpoint",
                                         server.endpoint])
        assert cli_account.account_command(cf.config, args, out) == 0
        text = out.getvalue()
        assert "1 difference(s)" in text
        assert "ETH      differs   venue 2 (free 2, locked 0)  capflow 0" in text, text
        out = io.StringIO()
        args = run._parser().parse_args(["account", "get", "live", "--endpoint",
                                         server.endpoint])
        assert cli_account.account_command(cf.config, args, out) == 0
        text = out.getvalue()
        assert "account live (live): CONNECTED, currency USDT" in text, text
        assert "USDT: 10000 / 0" in text and "1 difference(s)" in text
    finally:
        server.stop()


def test_account_get_of_a_paper_account_through_the_wire(make_system, tmp_path):
    cf = make_system(f"sqlite:///{tmp_path}/paper.db", server={
        "endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*"})
    server = Server(cf).start()
    try:
        with Client(server.endpoint, timeout_s=10, retries=1) as c:
            got = c.account_get("paper")
            assert (got["mode"], got["connection"]) == ("paper", "CONNECTED")
            assert got["balances"] is None and got["data_age_s"] is None
            assert got["last_reconcile"] is None
            with pytest.raises(ClientError) as paper:
                c.account_reconcile("paper")
            assert paper.value.code == "CONFLICT"
    finally:
        server.stop()


def test_the_account_is_reconciled_every_reconcile_every_s(start, venue):
    cf = start(reconcile_every_s=0.2)
    first = cf.trading.accounts.status["live"].last_reconcile
    venue.set_balance("ETH", "2")  # nobody asks: the next reconcile finds it
    state = wait(lambda: cf.trading.safety.account_state("live"))
    assert (state.state, state.changed_by) == ("REDUCE_ONLY", "reconcile")
    assert cf.trading.accounts.status["live"].last_reconcile is not first


def test_a_venue_that_cannot_be_read_fails_the_reconcile_and_changes_nothing(start, venue):
    from capflow.actors.model.errors import Unavailable

    cf = start()
    last = cf.trading.accounts.status["live"].last_reconcile
    venue.fault(path(venue, "balance"), "http", status=503, times=10_000)
    with pytest.raises(Unavailable) as failed:
        cf.account_reconcile("live")
    assert "ExchangeNotAvailable" in failed.value.message
    assert cf.trading.accounts.status["live"].last_reconcile is last
    assert cf.trading.safety.account_state("live") is None
