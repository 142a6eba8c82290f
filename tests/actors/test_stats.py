"""Trading statistics: hand-computed examples for every field, drawdown, grouping, the
equity curve, the equity report (from the allocation, open positions at market) and the
PNG chart, whose drawdown panel is the statistics' max drawdown."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capflow.actors.model.money import ZERO
from capflow.actors.model.stats import (
    MARK_ENTRY,
    MARK_FILL,
    MARK_SERVER,
    Mark,
    Stats,
    compute_stats,
    equity_curve,
    equity_report,
    group_stats,
    stats_map,
)
from capflow.actors.report import (
    GID_ALLOCATION,
    GID_DRAWDOWN,
    GID_EQUITY,
    GID_MARKED,
    equity_figure,
    write_equity_png,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
D = Decimal
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONE = Decimal("1")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Pos:
    position_id: str
    realized_pnl: Decimal
    fees: Decimal = ZERO
    status: str = "CLOSED"
    close_reason: str | None = None
    symbol: str = "BTCUSDT"
    strategy: str | None = "alpha"
    exchange: str | None = "binance"
    opened_at: datetime = T0
    closed_at: datetime | None = None
    # what marking an open position to market reads
    side: str = "BUY"
    qty_open: Decimal = ZERO
    qty_total: Decimal = ONE
    reserved: Decimal = ZERO
    entry_notional: Decimal = ZERO
    entry_price: Decimal | None = None


def closed(pid: str, pnl: str, minutes: int, *, fees: str = "0", reason: str | None = "tp",
           **kw: object) -> Pos:
    return Pos(pid, D(pnl), D(fees), "CLOSED", reason, closed_at=T0 + timedelta(minutes=minutes),
               **kw)  # type: ignore[arg-type]


def opened(pid: str, pnl: str = "0", *, fees: str = "0", close_reason: str | None = None,
           **kw: object) -> Pos:
    return Pos(pid, D(pnl), D(fees), "OPEN", close_reason, **kw)  # type: ignore[arg-type]


def series(*pnls: str) -> list[Pos]:
    """Closed trades with these net PnLs, closed one minute apart in this order."""
    return [closed(f"s{i:02d}", pnl, i, reason="manual") for i, pnl in enumerate(pnls)]


def exact(actual: Decimal | None, expected: str) -> None:
    """Same value *and* the same number of places (Decimal == ignores the exponent)."""
    assert isinstance(actual, Decimal)
    assert str(actual) == expected


# -- a worked example -----------------------------------------------------------------

# Net PnL = realized_pnl - fees; listed out of closing order on purpose.
#   id  strategy symbol   exchange reason  closes  realized  fees  net
#   p4  beta     ETHUSDT  None     tp      +4      40.00     0.75   39.25
#   p1  alpha    BTCUSDT  binance  tp      +1     100.00     2.00   98.00
#   p6  beta     ETHUSDT  bybit    (OPEN)          10.00     1.00   (not a trade)
#   p3  beta     BTCUSDT  bybit    manual  +3       3.00     3.00    0.00 (breakeven)
#   p5  alpha    BTCUSDT  binance  sl      +5     -20.00     0.50  -20.50
#   p2  alpha    ETHUSDT  binance  sl      +2     -50.00     1.50  -51.50
WORKED = [
    closed("p4", "40.00", 4, fees="0.75", reason="tp", strategy="beta", symbol="ETHUSDT",
           exchange=None),
    closed("p1", "100.00", 1, fees="2.00", reason="tp"),
    opened("p6", "10.00", fees="1.00", strategy="beta", symbol="ETHUSDT", exchange="bybit"),
    closed("p3", "3.00", 3, fees="3.00", reason="manual", strategy="beta", exchange="bybit"),
    closed("p5", "-20.00", 5, fees="0.50", reason="sl"),
    closed("p2", "-50.00", 2, fees="1.50", reason="sl", symbol="ETHUSDT"),
]


def test_worked_example_every_field() -> None:
    s = compute_stats(WORKED, initial_equity=D("1000"))
    assert (s.total_positions, s.open_positions, s.closed_positions) == (6, 1, 5)
    # wins: p1, p4; losses: p2, p5; p3 is breakeven and neither
    assert (s.winning_trades, s.losing_trades) == (2, 2)
    # tp: p1, p4; sl: p2, p5; manual: p3 (the open p6 has no reason)
    assert (s.tp_count, s.sl_count, s.manual_count) == (2, 2, 1)
    # 98.00 - 51.50 + 0.00 + 39.25 - 20.50 = 65.25 (p6's 9.00 is not counted)
    exact(s.total_pnl, "65.25")
    exact(s.gross_profit, "137.25")  # 98.00 + 39.25
    exact(s.gross_loss, "-72.00")  # -51.50 - 20.50
    exact(s.winrate, "0.4000")  # 2 / 5
    exact(s.avg_pnl_per_trade, "13.05")  # 65.25 / 5
    exact(s.avg_pnl_win, "68.62")  # 137.25 / 2 = 68.625 -> half even -> 68.62
    exact(s.avg_pnl_loss, "-36.00")  # -72.00 / 2
    exact(s.profit_factor, "1.9062")  # 137.25 / 72 = 1.90625 -> half even -> 1.9062
    # cumulative by closed_at: p1 98.00, p2 46.50, p3 46.50, p4 85.75, p5 65.25
    # deepest fall: 98.00 -> 46.50 = 51.50 (85.75 -> 65.25 is only 20.50)
    exact(s.max_drawdown, "51.50")
    # 51.50 / (1000 + 98.00) = 0.046903... -> 0.0469
    exact(s.max_drawdown_pct, "0.0469")


def test_worked_example_places_and_no_initial_equity() -> None:
    s = compute_stats(WORKED, places=4)
    exact(s.avg_pnl_per_trade, "13.0500")
    exact(s.avg_pnl_win, "68.6250")
    exact(s.avg_pnl_loss, "-36.0000")
    exact(s.winrate, "0.4000")  # ratios keep 4 places whatever `places` is
    assert s.max_drawdown_pct is None
    s0 = compute_stats(WORKED, places=0)
    exact(s0.avg_pnl_win, "69")  # 68.625 -> 69
    exact(s0.avg_pnl_per_trade, "13")


def test_rounding_is_half_even() -> None:
    # 0.125 / 1 -> 0.12 (half even), where half up would give 0.13
    exact(compute_stats(series("0.125")).avg_pnl_per_trade, "0.12")
    exact(compute_stats(series("0.135")).avg_pnl_per_trade, "0.14")
    # winrate 1/8 = 0.125 -> 0.1250; 2/3 = 0.6666... -> 0.6667
    exact(compute_stats(series("1", *["-1"] * 7)).winrate, "0.1250")
    exact(compute_stats(series("1", "1", "-1")).winrate, "0.6667")


# -- drawdown -------------------------------------------------------------------------

def test_max_drawdown_by_hand() -> None:
    # cumulative: 100, 70, 20, 40, -20; peak 100 is never regained, trough -20
    # max drawdown = 100 - (-20) = 120; as a fraction: 120 / (1000 + 100) = 0.10909 -> 0.1091
    trades = series("100", "-30", "-50", "20", "-60")
    s = compute_stats(trades, initial_equity=D("1000"))
    assert s.max_drawdown == D("120")
    exact(s.max_drawdown_pct, "0.1091")
    assert compute_stats(trades).max_drawdown_pct is None
    assert compute_stats(trades, initial_equity=D("0")).max_drawdown_pct is None
    assert compute_stats(trades, initial_equity=D("-5")).max_drawdown_pct is None


def test_max_drawdown_pct_uses_the_peak_of_the_deepest_fall() -> None:
    # cumulative: 50, -30, 170, 80: falls 80 (from 50) and 90 (from 170)
    # deepest is 90, from peak 170: 90 / (1000 + 170) = 0.076923 -> 0.0769
    s = compute_stats(series("50", "-80", "200", "-90"), initial_equity=D("1000"))
    assert s.max_drawdown == D("90")
    exact(s.max_drawdown_pct, "0.0769")


def test_equal_falls_report_the_earliest_peak() -> None:
    # cumulative: 50, 0, 150, 100: two falls of 50, from peaks 50 and 150
    # the earlier (lower) peak is kept: 50 / (1000 + 50) = 0.047619 -> 0.0476
    # (the later one would give 50 / 1150 = 0.0435)
    s = compute_stats(series("50", "-50", "150", "-50"), initial_equity=D("1000"))
    assert s.max_drawdown == D("50")
    exact(s.max_drawdown_pct, "0.0476")


def test_max_drawdown_from_the_start_and_when_only_rising() -> None:
    # the curve starts at 0, so a first loss is a drawdown: 0 -> -40, then -30
    s = compute_stats(series("-40", "10"), initial_equity=D("1000"))
    assert s.max_drawdown == D("40")
    exact(s.max_drawdown_pct, "0.0400")  # 40 / (1000 + 0)
    rising = compute_stats(series("10", "0", "5"), initial_equity=D("1000"))
    assert rising.max_drawdown == 0
    assert rising.max_drawdown_pct == 0


def test_max_drawdown_follows_closing_order_not_input_order() -> None:
    # by closed_at: +100 then -100 -> fall of 100; in input order it would be 0
    trades = [closed("b", "-100", 2), closed("a", "100", 1)]
    assert compute_stats(trades).max_drawdown == D("100")


# -- edge cases -----------------------------------------------------------------------

@pytest.mark.parametrize("positions", [[], [opened("o1", "5", fees="1"), opened("o2")]])
def test_no_closed_trades(positions: list[Pos]) -> None:
    s = compute_stats(positions, initial_equity=D("1000"))
    assert s.total_positions == len(positions)
    assert s.open_positions == len(positions)
    assert s.closed_positions == 0
    assert (s.winning_trades, s.losing_trades) == (0, 0)
    assert (s.tp_count, s.sl_count, s.manual_count) == (0, 0, 0)
    assert s.total_pnl == s.gross_profit == s.gross_loss == s.max_drawdown == 0
    assert s.winrate == 0
    assert isinstance(s.winrate, Decimal)
    assert s.avg_pnl_per_trade is None
    assert s.avg_pnl_win is None
    assert s.avg_pnl_loss is None
    assert s.profit_factor is None
    assert s.max_drawdown_pct == 0
    assert compute_stats(positions).max_drawdown_pct is None
    assert equity_curve(positions) == []


def test_profit_factor_none_without_losses_and_zero_without_profits() -> None:
    no_losses = compute_stats(series("10", "0", "5"))
    assert no_losses.profit_factor is None
    assert no_losses.avg_pnl_loss is None
    exact(no_losses.avg_pnl_win, "7.50")
    exact(no_losses.winrate, "0.6667")  # breakeven still counts as a closed trade
    no_profits = compute_stats(series("-10", "-5"))
    exact(no_profits.profit_factor, "0.0000")
    assert no_profits.avg_pnl_win is None
    exact(no_profits.winrate, "0.0000")


def test_close_reasons_count_closed_trades_only() -> None:
    # an open position partly exited by its take-profit is not a tp trade yet
    s = compute_stats([opened("o", "5", close_reason="tp"), closed("c", "1", 1, reason="sl"),
                       closed("u", "1", 2, reason=None)])
    assert (s.tp_count, s.sl_count, s.manual_count) == (0, 1, 0)
    assert s.closed_positions == 2


def test_fees_can_turn_a_gross_win_into_a_loss() -> None:
    s = compute_stats([closed("f", "1.00", 1, fees="1.25")])
    assert (s.winning_trades, s.losing_trades) == (0, 1)
    exact(s.total_pnl, "-0.25")


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        compute_stats([Pos("x", D("1"), status="closed")])
    with pytest.raises(ValueError, match="closed_at"):
        compute_stats([Pos("x", D("1"), status="CLOSED", closed_at=None)])
    with pytest.raises(ValueError, match="places"):
        compute_stats([], places=-1)


# -- grouping -------------------------------------------------------------------------

def test_group_by_strategy() -> None:
    extra = closed("p7", "7.00", 6, strategy=None)
    groups = group_stats(iter([*WORKED, extra]), "strategy")  # a one-pass iterable is fine
    assert list(groups) == ["", "alpha", "beta"]
    assert groups[""].closed_positions == 1
    exact(groups[""].total_pnl, "7.00")
    alpha, beta = groups["alpha"], groups["beta"]
    # alpha: p1 98.00, p2 -51.50, p5 -20.50 = 26.00; falls 98.00 -> 26.00 = 72.00
    assert (alpha.total_positions, alpha.closed_positions, alpha.winning_trades) == (3, 3, 1)
    exact(alpha.total_pnl, "26.00")
    exact(alpha.max_drawdown, "72.00")
    exact(alpha.profit_factor, "1.3611")  # 98 / 72 = 1.36111...
    # beta: p3 0.00, p4 39.25, p6 open
    assert (beta.total_positions, beta.open_positions, beta.closed_positions) == (3, 1, 2)
    exact(beta.total_pnl, "39.25")
    exact(beta.winrate, "0.5000")
    assert beta.profit_factor is None


def test_group_by_symbol_and_exchange() -> None:
    by_symbol = group_stats(WORKED, "symbol")
    assert list(by_symbol) == ["BTCUSDT", "ETHUSDT"]
    exact(by_symbol["BTCUSDT"].total_pnl, "77.50")  # p1 98.00 + p3 0.00 + p5 -20.50
    exact(by_symbol["ETHUSDT"].total_pnl, "-12.25")  # p2 -51.50 + p4 39.25 (p6 open)
    assert by_symbol["ETHUSDT"].open_positions == 1

    by_exchange = group_stats(WORKED, "exchange", places=3, initial_equity=D("100"))
    assert list(by_exchange) == ["", "binance", "bybit"]
    assert by_exchange[""].total_positions == 1  # p4 has no exchange
    exact(by_exchange[""].avg_pnl_per_trade, "39.250")
    assert by_exchange["bybit"].total_positions == 2  # p3, p6
    # binance: p1 98.00, p2 -51.50, p5 -20.50: fall 72.00 from 98.00 -> 72 / 198
    exact(by_exchange["binance"].max_drawdown_pct, "0.3636")


@pytest.mark.parametrize("by", ["status", "close_reason", "", "Strategy"])
def test_group_by_unknown_key_raises(by: str) -> None:
    with pytest.raises(ValueError):
        group_stats(WORKED, by)


# -- equity curve ---------------------------------------------------------------------

def test_equity_curve_orders_by_closed_at_then_position_id() -> None:
    tie = T0 + timedelta(minutes=5)
    positions = [
        closed("c", "3", 5),
        opened("o", "1000"),
        closed("z", "1", 1),
        closed("a", "2", 5),
        closed("b", "-4", 9, fees="0.5"),
    ]
    curve = equity_curve(positions, start=D("1000"))
    # z (min 1) 1001, a (min 5) 1003, c (min 5) 1006, b (min 9) 1006 - 4.5 = 1001.5
    assert curve == [
        (T0 + timedelta(minutes=1), D("1001")),
        (tie, D("1003")),
        (tie, D("1006")),
        (T0 + timedelta(minutes=9), D("1001.5")),
    ]
    assert all(isinstance(v, Decimal) for _, v in curve)
    assert [v for _, v in equity_curve(positions)] == [D("1"), D("3"), D("6"), D("1.5")]


def test_equity_curve_matches_stats_total() -> None:
    curve = equity_curve(WORKED)
    assert curve[-1][1] == compute_stats(WORKED).total_pnl
    assert [v for _, v in curve] == [D("98.00"), D("46.50"), D("46.50"), D("85.75"),
                                     D("65.25")]


# -- wire form ------------------------------------------------------------------------

def test_stats_map_is_a_plain_dict_of_all_fields() -> None:
    s = compute_stats(WORKED, initial_equity=D("1000"))
    m = stats_map(s)
    assert type(m) is dict
    assert list(m) == list(Stats.__struct_fields__)
    assert m["total_pnl"] == D("65.25")
    assert isinstance(m["total_pnl"], Decimal)
    assert m["winning_trades"] == 2
    assert m["max_drawdown_pct"] == D("0.0469")
    assert msgspec.convert(m, Stats) == s


# -- the equity report and its chart -------------------------------------------------

def _figure_series(fig, gid: str) -> list[float]:
    """The y values the figure drew for the artist `gid`."""
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert len(found) == 1, (gid, found)
    return [float(y) for y in found[0].get_ydata()]


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    for ax in fig.axes:
        parts += [ax.get_xlabel(), ax.get_ylabel()]
    return "\n".join(parts)


# (the positions, the allocation): each case's drawdown panel against compute_stats
PANEL_CASES = {
    "no positions": ([], D("1000")),
    "only open positions": ([opened("o1", "0", fees="0.50", qty_open=D("1"),
                                    reserved=D("100"), entry_price=D("100"))], D("1000")),
    "wins only": (series("10", "0", "5.25"), D("1000")),
    "losses only": (series("-10", "-0.01", "-5"), D("1000")),
    # the reported case: the first close was a loss. Drawn from the first close, the
    # panel showed 0.97 where the statistics said 1.44
    "first trade a loss": (series("-0.47", "-0.97", "0.20"), D("10000")),
    "mixed": (WORKED, D("1000")),
    "mixed, no allocation known": (WORKED, None),
    "deepest fall late": (series("100", "-30", "-50", "20", "-60"), D("1000")),
}


@pytest.mark.parametrize("case", list(PANEL_CASES))
def test_the_drawdown_panel_is_the_statistics_max_drawdown(case: str) -> None:
    positions, initial = PANEL_CASES[case]
    stats = compute_stats(positions, initial_equity=initial)
    report = equity_report(positions, start=initial or ZERO)
    assert report.max_drawdown == stats.max_drawdown
    assert max(p.drawdown for p in report.points) == stats.max_drawdown
    fig = equity_figure(report, currency="USDT")
    drawn = _figure_series(fig, GID_DRAWDOWN)
    assert min(drawn) == -float(stats.max_drawdown)
    assert max(drawn) == 0.0
    assert f"max drawdown {stats.max_drawdown:,} USDT" in _texts(fig)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(min_value=-1000, max_value=1000, places=2), max_size=30),
       st.sampled_from([None, D("0"), D("10000.00")]))
def test_report_and_statistics_agree_with_a_brute_force_drawdown(pnls, initial) -> None:
    positions = series(*map(str, pnls))
    cumulative = [ZERO]
    for x in pnls:
        cumulative.append(cumulative[-1] + x)
    # the largest fall from any earlier point (the allocation included) to a later one
    brute = max((cumulative[i] - cumulative[j] for i in range(len(cumulative))
                 for j in range(i, len(cumulative))), default=ZERO)
    stats = compute_stats(positions, initial_equity=initial)
    report = equity_report(positions, start=initial or ZERO)
    assert stats.max_drawdown == brute
    assert report.max_drawdown == brute
    assert max(p.drawdown for p in report.points) == brute
    assert [p.equity for p in report.points] == [(initial or ZERO) + c for c in cumulative]


def test_the_reported_case_by_hand() -> None:
    # 10000 -> 9999.53 -> 9998.56 -> 9998.76: the fall is 1.44 from the allocation
    positions, initial = PANEL_CASES["first trade a loss"]
    report = equity_report(positions, start=initial)
    assert [p.equity for p in report.points] == [D("10000"), D("9999.53"), D("9998.56"),
                                                  D("9998.76")]
    assert [p.drawdown for p in report.points] == [D("0"), D("0.47"), D("1.44"), D("1.24")]
    assert compute_stats(positions, initial_equity=initial).max_drawdown == D("1.44")


def test_equity_report_starts_at_the_allocation_and_steps_at_each_close() -> None:
    report = equity_report(WORKED, start=D("1000"))
    # the start is stamped with the first opening; then p1, p2, p3, p4, p5 by closed_at
    assert [(p.at, p.equity) for p in report.points] == [
        (T0, D("1000")),
        (T0 + timedelta(minutes=1), D("1098.00")),
        (T0 + timedelta(minutes=2), D("1046.50")),
        (T0 + timedelta(minutes=3), D("1046.50")),
        (T0 + timedelta(minutes=4), D("1085.75")),
        (T0 + timedelta(minutes=5), D("1065.25")),
    ]
    # the steps are the trades' net PnL, the end the statistics' total
    assert report.points[-1].equity - report.start == compute_stats(WORKED).total_pnl
    assert report.closed_trades == 5
    # p6 is open: valued at its entry price without a mark (its own net PnL here, 9.00)
    assert report.marked is not None and report.marked.sources == (MARK_ENTRY,)
    fig = equity_figure(report, currency="EUR")
    assert _figure_series(fig, GID_EQUITY) == [1000.0, 1098.0, 1046.5, 1046.5, 1085.75,
                                               1065.25]
    assert _figure_series(fig, GID_ALLOCATION) == [1000.0, 1000.0]


def test_open_positions_are_valued_at_market_with_their_source() -> None:
    t_close, t_fill, now = (T0 + timedelta(minutes=m) for m in (5, 7, 60))
    positions = [
        closed("c", "20.00", 5, fees="1.00"),
        # long 2 @ 100 (reserved 200), entry fee 0.20: at 103 it is +6.00 - 0.20
        opened("long", "0", fees="0.20", symbol="BTCUSDT", qty_open=D("2"),
               reserved=D("200.00"), entry_price=D("100")),
        # short 1 @ 50 (reserved 50), half exited before for +1.00 realized, fee 0.10:
        # at 48.50 the open half is +1.50
        opened("short", "1.00", fees="0.10", symbol="ETHUSDT", side="SELL",
               qty_open=D("1"), reserved=D("50.00"), entry_price=D("50")),
        # no mark for SOLUSDT: valued at its entry price, 0 unrealized, fee 0.05
        opened("sol", "0", fees="0.05", symbol="SOLUSDT", qty_open=D("3"),
               reserved=D("30.00"), entry_notional=D("30.00"), qty_total=D("3")),
    ]
    marks = {"BTCUSDT": Mark(D("103"), MARK_SERVER),
             "ETHUSDT": Mark(D("48.50"), MARK_FILL, t_fill)}
    report = equity_report(positions, start=D("1000"), marks=marks, as_of=now)
    m = report.marked
    assert m is not None
    # 1000 + 19.00 realized; + 5.80 + 2.40 - 0.05 at market
    assert report.points[-1].equity == D("1019.00")
    assert m.equity == D("1027.15")
    assert m.open_positions == 3
    assert m.sources == (MARK_SERVER, MARK_FILL, MARK_ENTRY)
    assert m.at == now  # the server's price is current: as of the report
    assert t_close < t_fill < now
    # the stored fill alone: the end is stamped with that fill's time
    only_fill = equity_report(positions[:1] + positions[2:3], start=D("1000"),
                              marks=marks, as_of=now)
    assert only_fill.marked is not None and only_fill.marked.at == t_fill
    assert only_fill.marked.sources == (MARK_FILL,)
    # the statistics ignore open positions: the marked end is not a trade
    assert compute_stats(positions).max_drawdown == report.max_drawdown == 0

    fig = equity_figure(report, currency="USDT")
    assert _figure_series(fig, GID_MARKED) == [1019.0, 1027.15]
    text = _texts(fig)
    assert "with 3 open positions at market (1,027.15 USDT)" in text
    assert "the running server's market.price" in text
    assert "the last stored fill price" in text
    assert "the entry price" in text
    with pytest.raises(ValueError, match="source"):
        equity_report(positions, marks={"BTCUSDT": Mark(D("1"), "guess")})


def test_the_axes_name_the_currency_and_time() -> None:
    fig = equity_figure(equity_report(WORKED, start=D("1000")), currency="USDT")
    equity_ax, drawdown_ax = fig.axes
    assert equity_ax.get_ylabel() == "equity (USDT)"
    assert drawdown_ax.get_ylabel() == "drawdown (USDT)"
    assert drawdown_ax.get_xlabel() == "time (UTC)"
    assert "allocation 1,000 USDT" in _texts(fig)
    # amounts as plain numbers, never "+1e4" above the axis
    fig.canvas.draw()
    assert equity_ax.yaxis.get_offset_text().get_text() == ""
    labels = [t.get_text() for t in equity_ax.get_yticklabels()]
    assert "1,000" in labels, labels


def test_trades_at_one_instant_are_drawn_over_minutes_not_years() -> None:
    from matplotlib.dates import num2date

    # opened and closed at the same time: matplotlib alone would show +-2 years
    report = equity_report([closed("x", "5", 0)], start=D("100"))
    assert {p.at for p in report.points} == {T0}
    lo, hi = (num2date(x) for x in equity_figure(report, currency="USDT").axes[-1].get_xlim())
    assert lo < T0 < hi
    assert hi - lo <= timedelta(minutes=10)


@pytest.mark.parametrize("positions", [[], [opened("o", "0", qty_open=D("1"),
                                                   reserved=D("5"), entry_price=D("5"))]])
def test_an_empty_report_shows_the_allocation_and_says_so(positions) -> None:
    report = equity_report(positions, start=D("2500.00"))
    assert [p.equity for p in report.points] == [D("2500.00")]
    fig = equity_figure(report, currency="USDT")
    assert "no closed trades yet" in _texts(fig)
    assert _figure_series(fig, GID_ALLOCATION) == [2500.0, 2500.0]
    assert "allocation 2,500.00 USDT" in _texts(fig)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_equity_png(tmp_path) -> None:
    report = equity_report(WORKED, start=D("1000"))
    out = write_equity_png(report, tmp_path / "nested" / "dir" / "equity.png",
                           currency="USDT")
    assert out == tmp_path / "nested" / "dir" / "equity.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000
    assert _png_size(data) == (1000, 600)
    assert len(data) < 500_000

    flat = write_equity_png(report, str(tmp_path / "flat.png"), drawdown=False, title="t",
                            currency="USDT")
    assert flat.read_bytes().startswith(PNG_SIGNATURE)
    one = write_equity_png(equity_report(WORKED[1:2], start=D("1000")), tmp_path / "one.png",
                           currency="USDT")
    assert one.read_bytes().startswith(PNG_SIGNATURE)


def test_write_equity_png_empty_curve(tmp_path) -> None:
    out = write_equity_png(equity_report([], start=D("1000")),
                           tmp_path / "empty" / "equity.png", currency="USDT")
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert _png_size(out.read_bytes()) == (1000, 600)


def test_write_equity_png_leaves_pyplot_alone(tmp_path) -> None:
    # in a fresh interpreter: drawing must neither import pyplot nor need a display
    code = textwrap.dedent(f"""
        import os, sys
        from decimal import Decimal
        from datetime import datetime, UTC
        os.environ.pop("DISPLAY", None)
        from capflow.actors.model.messages import PositionCapital
        from capflow.actors.report import write_equity_png
        from capflow.actors.model.stats import equity_report
        t = datetime(2026, 1, 1, tzinfo=UTC)
        one = PositionCapital("p", "BTCUSDT", "BUY", Decimal("0"), Decimal("1"),
                              Decimal("1"), Decimal("0"), Decimal("1"), Decimal("0"),
                              "CLOSED", t, closed_at=t)
        write_equity_png(equity_report([one], start=Decimal("1")),
                         {str(tmp_path / "x.png")!r}, currency="USDT")
        write_equity_png(equity_report([], start=Decimal("1")),
                         {str(tmp_path / "y.png")!r}, currency="USDT")
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "y.png").read_bytes().startswith(PNG_SIGNATURE)
