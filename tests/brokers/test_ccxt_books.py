"""What a live account books beyond its own orders' fills, against the Bybit emulator: a
venue's late fill of an order that ended (across a restart too), dust left by exits
(across a restart), fees charged in a third coin, and the balance the venue locks for
the working orders."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal as D

import pytest

from capflow.actors.alerts import Alert
from capflow.brokers.ccxt_settings import entry_client_id
from capflow.cli_account import report_text

from .venue_kit import connected, live_brokers, path, wait


@pytest.fixture
def start(make_system, sqlite_url, venue, venue_keys):
    """Start a capflow on the venue (the same database each time): ``start(**settings)``."""

    def make(**extra):
        cf = connected(make_system(sqlite_url, simulator={"symbols": {}},
                                   brokers=live_brokers(venue, **{"reconcile_every_s": 0,
                                                                  **extra})))
        wait(lambda: cf.trading.accounts.status["live"].last_reconcile is not None)
        return cf

    return make


def fills(sqlite_url: str) -> list[tuple]:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as c:
        return c.execute("select fill_id, kind, qty, fee from fills order by ts, fill_id"
                         ).fetchall()


def alerts_of(cf) -> list[Alert]:
    got: list[Alert] = []
    cf.bus.subscribe(lambda events: got.extend(e for e in events if isinstance(e, Alert)))
    return got


def _canceled_order(cf, venue, sqlite_url):
    cf.create_profile("p", "5000")
    order = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                            price="29000").result
    cid = entry_client_id(order.order_id)
    wait(lambda: venue.order(cid))
    cf.cancel_order("p", order.order_id)
    wait(lambda: venue.order(cid).status == "Cancelled")
    wait(lambda: cf.ledger("p").reserved_for_orders == 0)
    return order, cid


def test_a_late_fill_of_an_order_ended_before_a_restart_is_booked_once(
        start, venue, sqlite_url):
    """The venue reports a trade of an order capflow had booked canceled, found by the
    reconcile at the restart (the ledger holds no ended order of before in memory): it
    happened, so it is booked once, opening the position; the account agrees."""
    cf = start()
    order, cid = _canceled_order(cf, venue, sqlite_url)
    before = cf.ledger("p")
    cf.stop()
    venue.fill(cid, "0.004", late=True)  # matched as it was canceled; reported after
    cf = start()
    alerts = alerts_of(cf)
    report = cf.trading.accounts.status["live"].last_reconcile.report
    [missed] = report["missed_fills"]
    assert (missed["booked_as"], missed["order_id"]) == ("entry", order.order_id)
    [(_fill, kind, qty, _fee)] = wait(lambda: fills(sqlite_url))
    assert (kind, D(str(qty))) == ("ENTRY", D("0.004"))
    led = wait(lambda: cf.ledger("p").reserved_for_positions > 0 and cf.ledger("p"))
    # 0.004 at 29,000 = 116.00, of which 0.000004 BTC (0.12) is the venue's fee
    assert led.fees == before.fees + D("0.12")
    assert led.reserved_for_positions == D("115.88")
    assert led.available == before.available - D("116.00")
    assert led.reserved_for_orders == 0
    again = cf.account_reconcile("live")
    assert again["differences"] == 0 and again["missed_fills"] == [], again
    [btc] = [b for b in again["balances"] if b["coin"] == "BTC"]
    assert (btc["capflow"], btc["status"]) == (D("0.003996"), "ok")
    assert cf.trading.safety.account_state("live") is None
    assert not [a for a in alerts if a.kind == "fill_unbooked"]
    cf.stop()
    cf = start()  # and never again
    assert cf.account_reconcile("live")["missed_fills"] == []
    assert len(fills(sqlite_url)) == 1


def test_dust_left_by_exits_survives_a_restart(start, venue, sqlite_url):
    """Buying 0.012345 leaves 0.012332655 after the venue's fee in BTC; the exit sells
    0.012332 (the lot step): 0.000000655 BTC stays at the venue as dust. After a restart
    capflow still counts it (from the stored fills): the balance agrees exactly, and
    `account.get` shows it as before."""
    cf = start()
    cf.create_profile("p", "5000")
    dusts = []
    for n in range(2):
        a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.012345", signal_id=f"A{n}")
        wait(lambda: cf.ledger("p").reserved_for_positions > 0)
        cf.close_position("p", a["position_id"])
        wait(lambda: cf.ledger("p").reserved_for_positions == 0)
        dusts.append(D("0.000000655"))
    report = cf.account_reconcile("live")
    [btc] = [b for b in report["balances"] if b["coin"] == "BTC"]
    assert (btc["venue"]["total"], btc["capflow"], btc["difference"]) == (
        sum(dusts), sum(dusts), 0)
    cf.stop()
    cf = start()
    report = cf.trading.accounts.status["live"].last_reconcile.report
    [btc] = [b for b in report["balances"] if b["coin"] == "BTC"]
    assert (btc["venue"]["total"], btc["capflow"], btc["difference"], btc["status"]) == (
        sum(dusts), sum(dusts), 0, "ok")
    got = cf.account_get("live")
    [btc] = [b for b in got["last_reconcile"]["report"]["balances"] if b["coin"] == "BTC"]
    assert btc["capflow"] == sum(dusts)
    assert cf.trading.safety.account_state("live") is None


def _row(report: dict, coin: str) -> dict:
    [row] = [b for b in report["balances"] if b["coin"] == coin]
    return row


def test_the_balance_the_venue_locks_is_compared_with_the_working_orders(start, venue):
    """A working limit buy of 0.01 at 29,000 locks 290 USDT at the venue, and a sell of
    the venue's own coins its 0.5 ETH: explained by the orders (the sell is reported on
    its own, as an order capflow did not send)."""
    venue.set_balance("ETH", "0.5")
    cf = start(baseline={"ETH": "0.5"})
    cf.create_profile("p", "5000")
    order = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                            price="29000").result
    wait(lambda: venue.order(entry_client_id(order.order_id)))
    report = cf.account_reconcile("live")
    usdt = _row(report, "USDT")
    assert usdt["venue"]["locked"] == D("290")
    assert usdt["locked"] == {"orders": D("290"), "difference": 0, "status": "ok"}
    assert report["differences"] == 0, report
    venue.fill(entry_client_id(order.order_id), "0.004")  # partly filled: less locked
    wait(lambda: cf.ledger("p").reserved_for_positions > 0)
    report = cf.account_reconcile("live")
    assert _row(report, "USDT")["locked"] == {"orders": D("174"), "difference": 0,
                                              "status": "ok"}
    client = venue.ccxt(timeout=2000)
    client.load_markets()
    client.create_order("ETH/USDT", "limit", "sell", "0.5", "3000",
                        {"clientOrderId": "by-hand-1"})
    report = cf.account_reconcile("live")
    assert _row(report, "ETH")["locked"] == {"orders": D("0.5"), "difference": 0,
                                             "status": "ok"}
    assert report["differences"] == 1  # the order capflow did not send, once


def test_a_lock_no_open_order_explains_is_a_difference(start, venue):
    cf = start()
    alerts = alerts_of(cf)
    cf.create_profile("p", "5000")
    venue.set_balance("USDT", "10000", hold="150")  # locked by no order: a withdrawal
    report = cf.account_reconcile("live")
    usdt = _row(report, "USDT")
    assert usdt["locked"] == {"orders": 0, "difference": D("150"), "status": "differs"}
    assert report["differences"] == 1
    state = wait(lambda: cf.trading.safety.account_state("live"))
    assert (state.state, state.changed_by) == ("REDUCE_ONLY", "reconcile")
    [alert] = wait(lambda: [a for a in alerts if a.kind == "reconcile_difference"])
    assert "USDT locked at the venue 150 vs 0 by the open orders" in alert.reason
    assert "locked    venue 150  open orders 0  difference 150" in report_text(report)


def test_the_lock_of_an_order_in_flight_is_not_a_difference(start, venue):
    cf = start(lookups_before_resend=1000)
    cf.create_profile("p", "5000")
    venue.fault(path(venue, "create"), "lose", delay=1.5)  # placed; answered too late
    out = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                          price="29000").result
    wait(lambda: venue.order(entry_client_id(out.order_id)))
    got = {}
    t = threading.Thread(target=lambda: got.update(r=cf.account_reconcile("live")))
    t.start()  # asked while the create is unanswered: its cut comes right after
    t.join(30)
    report = got["r"]
    assert report["in_flight"] == [entry_client_id(out.order_id)]
    usdt = _row(report, "USDT")
    assert usdt["venue"]["locked"] == D("290")
    assert (usdt["locked"]["orders"], usdt["locked"]["status"]) == (0, "in_flight")
    assert report["differences"] == 0, report
    # once looked up, the order explains the lock
    wait(lambda: cf.account_reconcile("live")["in_flight"] == [])
    assert _row(cf.account_reconcile("live"), "USDT")["locked"]["status"] == "ok"


@pytest.fixture
def mnt_venue():
    """The emulator charging every fee in MNT (a fee token), which it lists at 0.80 /
    0.81, with 100 MNT in the account."""
    from capflow.bench.venues.bybit import BybitVenue, Instrument
    from capflow.bench.venues.bybit_book import default_instruments

    mnt = Instrument("MNTUSDT", "MNT", "USDT", D("0.01"), D("0.0001"), D("1"),
                     D("1000000"), D("1"), D("2000000"), D("0.0001"))
    with BybitVenue(balances={"USDT": "10000", "MNT": "100"},
                    instruments=[*default_instruments(), mnt]) as v:
        v.set_price("BTCUSDT", "30000.00", "30000.10")
        v.set_price("MNTUSDT", "0.80", "0.81", last="0.805")
        v.fee_coin = "MNT"
        yield v


def test_a_fee_in_a_third_coin_is_booked_and_reconciled(make_system, sqlite_url, mnt_venue,
                                                        venue_keys):
    """The venue charges a buy's fee in MNT: the fill records 0.37267205 MNT and books
    its value at the venue's bid (0.80) as the fee; the position holds all it bought; the
    MNT balance is expected less the fee, across a restart too."""
    venue = mnt_venue

    def start():
        return connected(make_system(sqlite_url, simulator={"symbols": {}},
                                     brokers=live_brokers(venue, reconcile_every_s=0,
                                                          baseline={"MNT": "100"})))

    cf = start()
    cf.create_profile("p", "5000")
    cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="A")
    led = wait(lambda: cf.ledger("p").reserved_for_positions > 0 and cf.ledger("p"))
    # 300.001 USDT at 0.1 %: 0.300001 USDT, / 0.805 = 0.37267205 MNT (rounded up)
    assert venue.balance("MNT").total == D("100") - D("0.37267205")
    assert led.fees == D("0.30")  # 0.37267205 MNT at the bid 0.80, rounded up
    assert led.reserved_for_positions == D("300.01")
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as c:
        [(coin, qty)] = c.execute("select fee_coin, fee_coin_qty from fills").fetchall()
    assert (coin, D(str(qty))) == ("MNT", D("0.37267205"))
    report = cf.account_reconcile("live")
    mnt = _row(report, "MNT")
    assert (mnt["capflow"], mnt["difference"], mnt["status"]) == (
        D("-0.37267205"), 0, "ok")
    assert (_row(report, "BTC")["capflow"], _row(report, "BTC")["status"]) == (
        D("0.01"), "ok")
    assert report["differences"] == 0, report
    cf.stop()
    cf = start()
    wait(lambda: cf.trading.accounts.status["live"].last_reconcile is not None)
    report = cf.account_reconcile("live")
    assert report["differences"] == 0, report
    assert cf.trading.safety.account_state("live") is None


def test_a_fee_in_a_third_coin_of_a_fill_the_reconcile_finds_is_booked(
        make_system, sqlite_url, mnt_venue, venue_keys):
    venue = mnt_venue

    def start():
        cf = connected(make_system(sqlite_url, simulator={"symbols": {}},
                                   brokers=live_brokers(venue, reconcile_every_s=0,
                                                        baseline={"MNT": "100"})))
        wait(lambda: cf.trading.accounts.status["live"].last_reconcile is not None)
        return cf

    cf = start()
    cf.create_profile("p", "5000")
    order = cf.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.01",
                            price="29000").result
    cid = entry_client_id(order.order_id)
    wait(lambda: venue.order(cid))
    cf.cancel_order("p", order.order_id)
    wait(lambda: cf.ledger("p").reserved_for_orders == 0)
    cf.stop()
    # reported late, while capflow is down: 0.29 USDT of fee = 0.36024845 MNT
    venue.fill(cid, "0.01", late=True)
    cf = start()  # only the reconcile finds it: the order had ended
    [missed] = cf.trading.accounts.status["live"].last_reconcile.report["missed_fills"]
    assert missed["booked_as"] == "entry"
    led = wait(lambda: cf.ledger("p").reserved_for_positions > 0 and cf.ledger("p"))
    assert led.fees == D("0.29")  # 0.36024845 MNT at 0.80, rounded up
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as c:
        [(coin, qty)] = c.execute("select fee_coin, fee_coin_qty from fills").fetchall()
    assert (coin, D(str(qty))) == ("MNT", D("0.36024845"))
    report = cf.account_reconcile("live")
    assert _row(report, "MNT")["capflow"] == D("-0.36024845")
    assert report["differences"] == 0, report
