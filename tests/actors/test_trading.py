"""The order flow end to end, in step mode over a replayed price path: signals become
orders, fills, positions with take-profit / stop-loss, exits and statistics, with every
amount computed by hand below.

Fees in these tests: taker 0.1 %, maker 0.05 %, no slippage; a market order reserves
its notional at the signal price + 1 % + the taker fee, rounded up to the cent.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import Conflict, NotFound

SETTINGS = {"taker_fee": "0.001", "maker_fee": "0.0005", "slippage_bps": "0"}


def write_ticks(path, rows):
    lines = ["ts,symbol,bid,ask,liquidity"]
    for i, (bid, ask, *liq) in enumerate(rows, start=1):
        lines.append(f"2026-01-05T12:00:{i:02d}+00:00,TESTUSDT,{bid},{ask},"
                     f"{liq[0] if liq else 1000}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def trade(make_system, sqlite_url, tmp_path, clock):
    def start(rows, name="ticks.csv", **sections):
        replay = write_ticks(tmp_path / name, rows)
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": replay, "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                           **sections)
    return start


def step(cf, clock, n=1):
    for _ in range(n):
        clock.advance(1)
        cf.advance(1)


PATH = [
    ("100.00", "100.20"),  # T1: A fills at the ask
    ("101.00", "101.20"),  # T2: nothing triggers
    ("106.00", "106.20"),  # T3: A's take-profit 105 is gapped: exits at the bid 106
    ("106.00", "106.20"),  # T4: B (short) fills at the bid 106
    ("107.00", "107.20"),  # T5: nothing
    ("109.50", "109.70"),  # T6: B's stop 108.12 is gapped: exits at the ask 109.70
    ("109.60", "109.80"),  # T7: C fills at the ask
    ("111.00", "111.20"),  # T8: C closed by hand at the bid
    ("111.00", "111.20"),  # T9: E fills at the ask, stays open
]


def test_signals_to_pnl_end_to_end(trade, clock):
    cf = trade(PATH)
    cf.create_profile("p", "10000")

    # A: BUY 10 @ 100, tp 5 % -> 105.00, sl 2 % -> 98.00;
    # reserves 10 * 100 * 1.01 * 1.001 = 1011.01
    a = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", tp_pct="5", sl_pct="2",
                  signal_id="A", strategy="trend", exchange="sim")
    assert (a["risk_ok"], a["tp_price"], a["sl_price"], a["qty"]) == (
        True, D("105.00"), D("98.00"), D("10"))
    assert cf.ledger("p").reserved_for_orders == D("1011.01")
    # a repeated signal_id answers the first answer
    again = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", tp_pct="5", sl_pct="2",
                      signal_id="A", strategy="trend", exchange="sim")
    assert again["reused"] and again["order_id"] == a["order_id"]
    with pytest.raises(Conflict):
        cf.signal("p", "TESTUSDT", "BUY", "100", qty="11", signal_id="A")

    step(cf, clock)  # T1: fill 10 @ 100.20 = 1002.00, taker fee 1.002 -> 1.01
    led = cf.ledger("p")
    assert (led.reserved_for_orders, led.reserved_for_positions, led.fees) == (
        D("0.00"), D("1002.00"), D("1.01"))
    step(cf, clock, 2)  # T2, T3: A exits at 106.00: pnl 1060 - 1002 = 58.00, fee 0.53

    # B: SELL 5 @ 106, tp 4 % -> 101.76, sl 2 % -> 108.12
    b = cf.signal("p", "TESTUSDT", "short", "106", qty="5", tp_pct="4", sl_pct="2",
                  signal_id="B", strategy="revert", exchange="sim")
    assert (b["tp_price"], b["sl_price"]) == (D("101.76"), D("108.12"))
    step(cf, clock, 3)  # T4 fill 5 @ 106.00 = 530.00 (fee 0.53); T5; T6 exit @ 109.70

    # C: BUY 2 @ 109.6, default tp 2 % -> 111.79, sl 1 % -> 108.50
    c = cf.signal("p", "TESTUSDT", "BUY", "109.6", qty="2", signal_id="C", strategy="trend")
    assert (c["tp_price"], c["sl_price"]) == (D("111.79"), D("108.50"))
    step(cf, clock)  # T7: fill 2 @ 109.80 = 219.60, fee 0.2196 -> 0.22
    closing = cf.close_position("p", c["position_id"])
    assert closing.status == "OPEN"
    step(cf, clock)  # T8: exit 2 @ 111.00 = 222.00: pnl 2.40, taker fee 0.222 -> 0.23

    # D: far too large -> answered, not traded
    d = cf.signal("p", "TESTUSDT", "BUY", "111", qty="1000", signal_id="D")
    assert (d["risk_ok"], d["risk_reason"], d["order_id"]) == (
        False, "INSUFFICIENT_CAPITAL", None)
    # E: stays open: fills at T9 @ 111.20, fee 0.1112 -> 0.12
    e = cf.signal("p", "TESTUSDT", "BUY", "111", qty="1", signal_id="E", strategy="trend")
    step(cf, clock)

    positions, _ = cf.trading.list_positions("p")
    by_id = {p.position_id: p for p in positions}
    pa, pb, pc, pe = (by_id[x["position_id"]] for x in (a, b, c, e))
    assert (pa.status, pa.close_reason, pa.entry_price, pa.exit_price) == (
        "CLOSED", "tp", D("100.20"), D("106.00"))
    assert (pa.realized_pnl, pa.fees) == (D("58.00"), D("1.54"))
    assert (pb.side, pb.status, pb.close_reason, pb.exit_price) == (
        "SELL", "CLOSED", "sl", D("109.70"))
    assert (pb.realized_pnl, pb.fees) == (D("-18.50"), D("1.08"))
    assert (pc.status, pc.close_reason, pc.realized_pnl, pc.fees) == (
        "CLOSED", "manual", D("2.40"), D("0.45"))
    assert (pe.status, pe.qty_open, pe.reserved, pe.tp_price, pe.sl_price) == (
        "OPEN", D("1"), D("111.20"), D("113.22"), D("109.89"))

    led = cf.ledger("p")
    # realized 58.00 - 18.50 + 2.40 = 41.90; fees 1.54 + 1.08 + 0.45 + 0.12 = 3.19
    assert (led.realized_pnl, led.fees, led.reserved_for_positions, led.reserved_for_orders,
            led.available) == (D("41.90"), D("3.19"), D("111.20"), D("0.00"), D("9927.51"))
    assert cf.audit("p").ok

    stats, groups = cf.trading.stats("p", "strategy")
    # net: A 56.46 (tp), B -19.58 (sl), C 1.95 (manual); E open
    assert (stats.total_positions, stats.open_positions, stats.closed_positions) == (4, 1, 3)
    assert (stats.winning_trades, stats.losing_trades) == (2, 1)
    assert (stats.tp_count, stats.sl_count, stats.manual_count) == (1, 1, 1)
    assert stats.total_pnl == D("38.83")
    assert stats.winrate == D("0.6667")
    assert stats.avg_pnl_per_trade == D("12.94")
    assert stats.avg_pnl_win == D("29.20")  # 58.41 / 2 = 29.205, half-even
    assert stats.avg_pnl_loss == D("-19.58")
    assert stats.profit_factor == D("2.9831")  # 58.41 / 19.58
    assert stats.max_drawdown == D("19.58")  # 56.46 -> 36.88
    assert groups["trend"].total_pnl == D("58.41")
    assert groups["revert"].total_pnl == D("-19.58")

    orders, _ = cf.trading.list_orders("p", status="FILLED")
    assert len(orders) == 4
    assert all(o.reserved == 0 for o in orders)


def test_partial_fills_move_capital_at_each_tick(trade, clock):
    # 4 units of liquidity per tick: a 10-unit order fills 4, 4, 2
    cf = trade([("100.00", "100.20", 4)] * 3)
    cf.create_profile("p", "10000")
    s = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", signal_id="big")
    assert cf.ledger("p").reserved_for_orders == D("1011.01")
    expected = [
        # filled, reserved_for_orders, reserved_for_positions, fees
        # fill 4 @ 100.20 = 400.80, fee 0.4008 -> 0.41; releases floor(1011.01 * 4 / 10)
        # = 404.40
        (D("4"), D("606.61"), D("400.80"), D("0.41")),
        # releases floor(606.61 * 4 / 6) = 404.40; a fee of one fill of 8: 0.8016 -> 0.81,
        # less the 0.41 paid: 0.40
        (D("8"), D("202.21"), D("801.60"), D("0.81")),
        # the last fill releases the rest; 2 @ 100.20 = 200.40, fee 1.002 -> 1.01 in all
        (D("10"), D("0.00"), D("1002.00"), D("1.01")),
    ]
    for filled, orders, positions, fees in expected:
        step(cf, clock)
        led = cf.ledger("p")
        assert (led.reserved_for_orders, led.reserved_for_positions, led.fees) == (
            orders, positions, fees)
        assert led.available == D("10000") - orders - positions - fees
        o = cf.trading.get_order("p", s["order_id"])
        assert o.filled_qty == filled
        assert o.status == ("FILLED" if filled == 10 else "PARTIALLY_FILLED")
        assert cf.audit("p").ok


def test_stop_loss_gap_fills_at_the_tick_price(trade, clock):
    cf = trade([("100.00", "100.20"), ("99.00", "99.20"), ("90.00", "90.20")])
    cf.create_profile("p", "10000")
    s = cf.signal("p", "TESTUSDT", "BUY", "100", qty="1", sl_pct="2", tp_pct="5")
    assert s["sl_price"] == D("98.00")
    step(cf, clock, 3)  # the bid jumps from 99 to 90: the stop at 98 fills at 90
    p = cf.trading.get_order("p", s["order_id"])
    assert p.status == "FILLED"
    pos = {x.position_id: x for x in cf.trading.list_positions("p")[0]}[s["position_id"]]
    assert (pos.close_reason, pos.exit_price, pos.realized_pnl) == (
        "sl", D("90.00"), D("-10.20"))


def test_limit_order_fills_when_crossed_and_cancel_releases(trade, clock):
    cf = trade([("100.00", "100.20"), ("99.00", "99.20"), ("97.00", "97.20")])
    cf.create_profile("p", "10000")
    out = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT", price="98")
    order = out.result
    # a limit order reserves qty * limit * (1 + maker fee) = 196 * 1.0005 = 196.098 -> 196.10
    assert (order.type, order.reserved) == ("LIMIT", D("196.10"))
    other = cf.submit_order("p", "lim-2", "TESTUSDT", "BUY", "1", type="LIMIT", price="90")
    step(cf, clock, 2)  # not crossed at 100.20 nor 99.20
    assert cf.trading.get_order("p", order.order_id).status == "OPEN"
    step(cf, clock)  # ask 97.20 <= 98: fills at 97.20 (the better price), maker fee
    filled = cf.trading.get_order("p", order.order_id)
    assert (filled.status, filled.avg_price) == ("FILLED", D("97.20"))
    canceled = cf.cancel_order("p", other.result.order_id)
    assert (canceled.status, canceled.reserved) == ("CANCELED", D("0"))
    with pytest.raises(Conflict):
        cf.cancel_order("p", other.result.order_id)
    with pytest.raises(NotFound):
        cf.cancel_order("p", "ord_nope")
    led = cf.ledger("p")
    # 2 @ 97.20 = 194.40, maker fee 0.0972 -> 0.10
    assert (led.reserved_for_orders, led.reserved_for_positions, led.fees) == (
        D("0.00"), D("194.40"), D("0.10"))
    # the same client_order_id with the same content is the same order
    again = cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "2", type="LIMIT", price="98")
    assert again.reused and again.result == order.order_id
    with pytest.raises(Conflict):
        cf.submit_order("p", "lim-1", "TESTUSDT", "BUY", "3", type="LIMIT", price="98")


@pytest.fixture
def restartable(make_system, sqlite_url, tmp_path, clock):
    """Start a System on one database with its own replayed prices, as many times as a
    test restarts it."""
    def start(rows, name):
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": write_ticks(tmp_path / name, rows),
                                      "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    return start


def test_restart_with_open_positions_keeps_their_stops(restartable, clock):
    start = restartable
    cf = start([("100.00", "100.20")], "before.csv")
    cf.create_profile("p", "10000")
    s = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", tp_pct="5", sl_pct="2")
    step(cf, clock)  # filled at 100.20
    lim = cf.submit_order("p", "lim", "TESTUSDT", "BUY", "1", type="LIMIT", price="95")
    cf.stop()

    cf = start([("101.00", "101.20"), ("97.50", "97.70"), ("94.50", "94.70")], "after.csv")
    pos = {p.position_id: p for p in cf.trading.list_positions("p")[0]}[s["position_id"]]
    assert (pos.status, pos.tp_price, pos.sl_price) == ("OPEN", D("105.00"), D("98.00"))
    step(cf, clock)  # 101: nothing
    step(cf, clock)  # 97.50 < 98.00: the restored stop fires at the bid
    pos = {p.position_id: p for p in cf.trading.list_positions("p")[0]}[s["position_id"]]
    assert (pos.status, pos.close_reason, pos.realized_pnl) == ("CLOSED", "sl", D("-27.00"))
    step(cf, clock)  # the restored limit order fills at 94.70
    o = cf.trading.get_order("p", lim.result.order_id)
    assert (o.status, o.avg_price) == ("FILLED", D("94.70"))
    assert cf.audit("p").ok


def test_a_close_acknowledged_before_a_restart_is_still_done_after_it(restartable, clock):
    """The paper broker holds a requested close until the next tick fills it; the request
    is recorded on the position first, so the broker of the restarted server is asked
    again."""
    start = restartable
    cf = start([("100.00", "100.20")], "before.csv")
    cf.create_profile("p", "10000")
    s = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", tp_pct="20", sl_pct="20")
    step(cf, clock)  # filled at 100.20
    cf.close_position("p", s["position_id"])  # acknowledged; no tick before the restart
    cf.stop()

    cf = start([("101.00", "101.20"), ("101.00", "101.20")], "after.csv")
    step(cf, clock, 2)
    pos = {p.position_id: p for p in cf.trading.list_positions("p")[0]}[s["position_id"]]
    assert (pos.status, pos.close_reason) == ("CLOSED", "manual")


def test_oms_disabled_audits_without_trading(make_system, sqlite_url, tmp_path):
    cf = make_system(sqlite_url, oms={"enabled": False})
    cf.create_profile("p", "1000")
    r = cf.signal("p", "BTCUSDT", "BUY", "65000", qty="0.001", signal_id="x")
    assert (r["received"], r["oms_enabled"], r["risk_ok"], r["risk_reason"]) == (
        True, False, False, "OMS_DISABLED")
    assert cf.ledger("p").available == D("1000.00")
    lines = (tmp_path / "signals.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"signal_id":"x"' in lines[0]


def test_unknown_symbol_starts_a_price_process_at_the_signal_price(make_system, sqlite_url,
                                                                   clock):
    cf = make_system(sqlite_url, clock=clock)
    cf.create_profile("p", "100000")
    r = cf.signal("p", "DOGEUSDT", "BUY", "0.1234", notional="100")
    assert r["risk_ok"] and r["qty"] == D("810.372771")  # floor(100 / 0.1234, 6 places)
    cf.advance(1)
    tick = cf.price("DOGEUSDT")
    assert tick.bid < D("0.1234") < tick.ask


def test_oms_disabled_takes_no_orders_and_lists_check_their_input(make_system, sqlite_url):
    from capflow.actors.model.errors import Denied, InvalidArgument

    cf = make_system(sqlite_url, oms={"enabled": False})
    cf.create_profile("p", "1000")
    with pytest.raises(Denied) as info:
        cf.submit_order("p", "o-1", "BTCUSDT", "BUY", "0.001", price="65000")
    assert info.value.code == "RISK_REJECTED" and info.value.details["reason"] == "OMS_DISABLED"
    with pytest.raises(InvalidArgument):
        cf.trading.list_orders("p", status="DONE")
    with pytest.raises(InvalidArgument):
        cf.trading.list_positions("p", status="FILLED")
    with pytest.raises(NotFound):
        cf.trading.list_positions("ghost")
    with pytest.raises(NotFound):
        cf.trading.stats("ghost")


def test_embedded_api_shrinks_entries_and_answers_a_cooldown(trade, clock):
    """`System.signal` and `System.risk_check` carry the sizing option and answer the
    protections as the wire does."""
    cf = trade([("100.00", "100.20"), ("97.00", "97.20"), ("97.00", "97.20")],
               risk={"limits": {"cooldown_s": "30"}})
    cf.create_profile("p", "1000")
    # 20 at 100 would reserve 2022.02: shrunk to what 1000 free pays for
    a = cf.signal("p", "TESTUSDT", "BUY", "100", qty="20", sizing="shrink", sl_pct="2")
    granted = D(a["qty"])
    reserved = (granted * 100 * D("1.01") * D("1.001")).quantize(D("0.01"), "ROUND_CEILING")
    assert a["risk_ok"] and reserved <= 1000 < (granted + D("0.000001")) * 100 * D(
        "1.01") * D("1.001")
    assert (a["sizing"]["requested_qty"], a["sizing"]["bound_by"]) == (D(20), "capital")
    what_if = cf.risk_check("p", {"symbol": "TESTUSDT", "side": "BUY", "price": "100",
                                  "qty": "20", "sizing": "shrink"}).get(5)
    assert what_if["sizing"]["bound_by"] == "capital"
    step(cf, clock, 2)  # T1 fills, T2 the stop 98.00 is gapped: exits at the bid 97.00
    b = cf.signal("p", "TESTUSDT", "BUY", "97", qty="1")
    assert (b["risk_reason"], b["risk_details"]["retry_after_s"]) == ("COOLDOWN", D(30))
    clock.advance(30)
    assert cf.signal("p", "TESTUSDT", "BUY", "97", qty="1")["risk_ok"] is True
