"""Trading statistics: hand-computed examples for every field, drawdown, grouping, the
equity curve, and the PNG chart."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from capflow.actors.money import ZERO
from capflow.actors.report import write_equity_png
from capflow.actors.stats import Stats, compute_stats, equity_curve, group_stats, stats_map

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
D = Decimal
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


# -- chart ----------------------------------------------------------------------------

def test_write_equity_png(tmp_path) -> None:
    curve = equity_curve(WORKED, start=D("1000"))
    out = write_equity_png(curve, tmp_path / "nested" / "dir" / "equity.png")
    assert out == tmp_path / "nested" / "dir" / "equity.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000

    flat = write_equity_png(curve, str(tmp_path / "flat.png"), drawdown=False, title="t")
    assert flat.read_bytes().startswith(PNG_SIGNATURE)
    one = write_equity_png(curve[:1], tmp_path / "one.png")
    assert one.read_bytes().startswith(PNG_SIGNATURE)


def test_write_equity_png_empty_curve(tmp_path) -> None:
    out = write_equity_png([], tmp_path / "empty" / "equity.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_write_equity_png_leaves_pyplot_alone(tmp_path) -> None:
    # in a fresh interpreter: drawing must neither import pyplot nor need a display
    code = textwrap.dedent(f"""
        import os, sys
        from decimal import Decimal
        from datetime import datetime, UTC
        os.environ.pop("DISPLAY", None)
        from capflow.actors.report import write_equity_png
        write_equity_png([(datetime(2026, 1, 1, tzinfo=UTC), Decimal("1"))],
                         {str(tmp_path / "x.png")!r})
        write_equity_png([], {str(tmp_path / "y.png")!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").read_bytes().startswith(PNG_SIGNATURE)
