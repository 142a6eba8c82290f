"""The venue's prices drive a capflow server whose account is the ccxt adapter on the
venue emulators: the account's symbols are priced by the venue's tickers (not simulated),
its positions are marked and closed by take-profit / stop-loss at the venue's prices,
and prices that stop arriving refuse entries (STALE_PRICES) while exits go through."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from capflow.actors.alerts import Alert
from capflow.actors.model.errors import Denied
from capflow.brokers.ccxt_settings import exit_client_id

from .venue_kit import connected, live_brokers, order_sent, path, sells, wait


@pytest.fixture
def start(make_system, sqlite_url, venue, venue_keys):
    """Start (again) a capflow on the venue; the simulator keeps its default symbols."""
    brokers = live_brokers(venue, symbols={"BTCUSDT": "BTC/USDT"}, price_interval_s=0.05,
                           stale_after_s=0.5)

    def started():
        return connected(make_system(sqlite_url, brokers=brokers))

    return started


@pytest.fixture
def live(start):
    cf = start()
    cf.create_profile("p", "5000")
    return cf



def alerts_of(cf) -> list[Alert]:
    seen: list[Alert] = []
    cf.bus.subscribe(lambda events: seen.extend(e for e in events if isinstance(e, Alert)))
    return seen


def _positions(cf, status):
    return cf.trading.list_positions("p", status=status)[0]


def _open(cf, sid="A", **extra):
    a = cf.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id=sid, **extra)
    assert a["risk_ok"], a
    return wait(lambda: _positions(cf, "OPEN"))[0]


def _closed(cf):
    return wait(lambda: _positions(cf, "CLOSED"))


def _sells(venue):
    return [order_sent(r) for r in sells(venue)]


def test_the_account_symbols_are_priced_by_the_venue_not_simulated(live, venue):
    assert "BTCUSDT" not in live.trading.sim.symbols().get(5)
    venue.set_price("BTCUSDT", "31000.00", "31000.20", last="31000.10")
    tick = wait(lambda: (t := live.trading.board.get("BTCUSDT")) and t.bid == D("31000.00")
                and t)
    assert (tick.ask, tick.last) == (D("31000.20"), D("31000.10"))
    live.advance(3)  # the simulator's steps leave the venue's symbol alone
    assert live.trading.price("BTCUSDT").bid == D("31000.00")


def test_a_position_is_marked_to_the_venue_price(live, venue):
    venue.set_price("BTCUSDT", "30000.00", "30000.10")
    _open(live)
    venue.set_price("BTCUSDT", "27000.00", "27000.20", last="27000.10")

    def marked():
        led = live.ledger("p")
        held = D("0.01") - D("0.00001")  # the venue kept its fee in BTC
        expected = (led.allocated + led.realized_pnl - led.fees + held * D("27000.10")
                    - led.reserved_for_positions)
        return live.get_profile("p").risk["equity"] == expected

    wait(marked)


@pytest.mark.parametrize(("bid", "ask", "reason"), [("30700.00", "30700.10", "tp"),
                                                    ("29600.00", "29600.10", "sl")])
def test_a_venue_tick_across_a_level_exits_once(live, venue, bid, ask, reason):
    p = _open(live, tp_pct="2", sl_pct="1")
    assert p.tp_price is not None and p.sl_price is not None
    venue.set_price("BTCUSDT", bid, ask)
    [closed] = _closed(live)
    assert (closed.close_reason, closed.exit_price) == (reason, D(bid))
    time.sleep(0.3)  # more ticks across the level: still one exit
    [order] = _sells(venue)
    assert order["client_id"] == exit_client_id(p.position_id, 1)
    assert D(order["qty"]) == D("0.00999")  # 0.01 - 0.00001 fee, on the lot step
    assert len(venue.orders()) == 2


def test_an_exit_whose_answer_was_lost_is_one_order_across_a_restart(live, start, venue):
    p = _open(live, tp_pct="2", sl_pct="1")
    venue.fault(path(venue, "create"), "lose", delay=0)  # placed and filled; answer lost
    venue.set_price("BTCUSDT", "30700.00", "30700.10")
    wait(lambda: _sells(venue))
    live.stop()  # before the venue's fill of the exit is booked
    cf = start()
    [closed] = _closed(cf)
    assert (closed.position_id, closed.close_reason) == (p.position_id, "tp")
    assert closed.exit_price == D("30700.00")
    assert len([o for o in venue.orders() if o.side == "Sell"]) == 1
    assert {r["client_id"] for r in _sells(venue)} == {
        exit_client_id(p.position_id, 1)}


def test_stale_prices_refuse_entries_keep_exits_and_alert_once(live, venue):
    alerts = alerts_of(live)
    p = _open(live, tp_pct="2", sl_pct="1")
    venue.fault(path(venue, "tickers"), "http", status=503, times=10**6)
    wait(lambda: live.trading.accounts.status["live"].prices.stale())
    [alert] = wait(lambda: [a for a in alerts if a.kind == "prices_stale"])
    assert (alert.scope, alert.target) == ("account", "live")
    assert alert.details["unwatched"] == [p.position_id]
    assert any("prices stale" in r for r in live.trading.safety.reasons())

    refused = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="B")
    assert (refused["risk_ok"], refused["risk_reason"]) == (False, "STALE_PRICES")
    check = live.risk_check("p", {"symbol": "BTCUSDT", "side": "BUY", "price": "30000.10",
                                  "qty": "0.01", "timestamp": live.clock.now().isoformat()}
                            ).get(10)
    assert (check["allowed"], check["reason"]) == (False, "STALE_PRICES")
    with pytest.raises(Denied) as denied:
        live.submit_order("p", "o1", "BTCUSDT", "BUY", type="LIMIT", qty="0.001",
                          price="29000")
    assert denied.value.details["reason"] == "STALE_PRICES"
    assert len(venue.orders()) == 1  # the entry of A only

    live.close_position("p", p.position_id)  # an exit goes through
    [closed] = _closed(live)
    assert closed.close_reason == "manual"
    time.sleep(0.6)  # still stale: no second alert
    assert len([a for a in alerts if a.kind == "prices_stale"]) == 1

    venue.clear_faults()  # prices again: entries again, the health clears
    wait(lambda: not live.trading.accounts.status["live"].prices.stale())
    again = live.signal("p", "BTCUSDT", "BUY", "30000.10", qty="0.01", signal_id="C")
    assert again["risk_ok"], again
    wait(lambda: not any("prices stale" in r for r in live.trading.safety.reasons()))


def test_a_stop_exit_the_venue_refuses_is_not_sent_again_on_every_tick(live, venue):
    p = _open(live, tp_pct="2", sl_pct="1")
    venue.fault(path(venue, "create"), "reject", code=170131, msg="Insufficient balance.")
    venue.set_price("BTCUSDT", "30700.00", "30700.10")
    wait(lambda: _sells(venue))
    time.sleep(0.5)  # ten price polls across the take-profit
    assert len(_sells(venue)) == 1
    [still] = _positions(live, "OPEN")
    assert still.position_id == p.position_id
    live.close_position("p", p.position_id)  # by hand it still goes
    [closed] = _closed(live)
    assert closed.close_reason == "manual"
