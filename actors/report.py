"""Equity-curve charts as PNG files.

Drawn on a bare `matplotlib.figure.Figure` with the Agg canvas: no GUI backend, no
pyplot and none of its global state, so it is safe from any thread or actor. What is
drawn comes from `actors.stats.equity_report` (exact amounts, the drawdowns that
`compute_stats` measures); amounts become floats only here, for plotting.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from capflow.actors.model.stats import MARK_ENTRY, MARK_FILL, MARK_SERVER, EquityReport

_SIZE = (10.0, 6.0)
_DPI = 100
_ONE_INSTANT_PAD = timedelta(minutes=5)
#: how the legend names where the open positions' prices came from
SOURCE_TEXT = {MARK_SERVER: "the running server's market.price",
               MARK_FILL: "the last stored fill price",
               MARK_ENTRY: "the entry price (no market price found)"}
#: gids of the drawn series, for whoever inspects a figure
GID_EQUITY, GID_DRAWDOWN, GID_MARKED, GID_ALLOCATION = (
    "equity", "drawdown", "marked", "allocation")


def amount(value: Decimal, currency: str) -> str:
    """`value` exactly as stored, with thousands separators, and its currency."""
    return f"{value:,} {currency}"


def marked_text(report: EquityReport, currency: str) -> str | None:
    """The legend's words for the end with open positions at market."""
    m = report.marked
    if m is None:
        return None
    n = m.open_positions
    by = " and ".join(SOURCE_TEXT[s] for s in m.sources)
    return (f"with {n} open position{'s' if n != 1 else ''} at market "
            f"({amount(m.equity, currency)}), priced by {by}")


class _AmountFormatter(ScalarFormatter):
    """Tick labels as plain amounts with thousands separators ("250,000", "9,998.8"):
    no '+1e4' offset, no scientific notation, the places matplotlib picks."""

    def __init__(self) -> None:
        super().__init__(useOffset=False)
        self.set_scientific(False)

    def __call__(self, x, pos=None) -> str:
        label = super().__call__(x, pos)
        minus = label[:1] in ("-", "\N{MINUS SIGN}")
        whole, dot, frac = label.lstrip("-\N{MINUS SIGN}").partition(".")
        if not whole.isdigit():
            return label
        return f"{label[:1] if minus else ''}{int(whole):,}{dot}{frac}"


def _plain_amounts(ax) -> None:
    ax.yaxis.set_major_formatter(_AmountFormatter())


def equity_figure(report: EquityReport, *, currency: str, title: str = "capflow equity",
                  drawdown: bool = True) -> Figure:
    """The chart of `report` on an Agg canvas: equity in `currency` from the allocation,
    a step per closed trade, the open positions at market dashed to the end, and (with
    `drawdown`) a panel of the fall below the running peak."""
    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if drawdown:
        ax, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_dd = fig.add_subplot(), None
    ax.set_title(title)
    ax.axhline(float(report.start), color="gray", linestyle=":", linewidth=1.2,
               label=f"allocation {amount(report.start, currency)}", gid=GID_ALLOCATION)
    timed = [p for p in report.points if p.at is not None]
    if timed:
        times = [p.at for p in timed]
        ax.plot(times, [float(p.equity) for p in timed], drawstyle="steps-post",
                marker="o" if len(timed) < 50 else None, markersize=3, linewidth=1.5,
                color="tab:blue", gid=GID_EQUITY,
                label="equity: allocation + net PnL of each closed trade")
    m = report.marked
    if m is not None and timed and m.at is not None:
        last = timed[-1]
        ax.plot([last.at, m.at], [float(last.equity), float(m.equity)], linestyle="--",
                marker="D", markevery=[1], markersize=6, linewidth=1.5, color="tab:orange",
                gid=GID_MARKED, label=marked_text(report, currency))
    if report.closed_trades == 0:
        ax.text(0.5, 0.62, "no closed trades yet", ha="center", va="center",
                transform=ax.transAxes, fontsize=14, color="gray")
    ax.set_ylabel(f"equity ({currency})")
    ax.grid(True, alpha=0.3)
    _plain_amounts(ax)
    ax.legend(loc="best", fontsize="small", framealpha=0.85)
    bottom = ax
    if ax_dd is not None:
        bottom = ax_dd
        if timed:
            dd = [-float(p.drawdown) for p in timed]
            dd_times = list(times)
            if m is not None and m.at is not None and m.at > dd_times[-1]:
                # the last close's drawdown holds until the end of the chart
                dd_times.append(m.at)
                dd.append(dd[-1])
            ax_dd.fill_between(dd_times, dd, 0.0, step="post", color="tab:red", alpha=0.4)
            ax_dd.plot(dd_times, dd, drawstyle="steps-post", linewidth=1.0, color="tab:red",
                       marker="o" if len(timed) < 50 else None, markersize=3,
                       markevery=list(range(len(timed))), gid=GID_DRAWDOWN)
        else:
            ax_dd.axhline(0.0, color="tab:red", linewidth=1.0, gid=GID_DRAWDOWN)
        ax_dd.set_title(f"max drawdown {amount(report.max_drawdown, currency)} (closed "
                        "trades, as capflow stats)", loc="left", fontsize="small")
        # a fall is drawn below zero; nothing above it (a flat panel still shows a scale)
        deepest = float(report.max_drawdown) or 1.0
        ax_dd.set_ylim(-deepest * 1.15, deepest * 0.05)
        ax_dd.set_ylabel(f"drawdown ({currency})")
        ax_dd.grid(True, alpha=0.3)
        _plain_amounts(ax_dd)
    bottom.set_xlabel("time (UTC)")
    if timed:
        ends = {timed[0].at, timed[-1].at, m.at if m is not None else None} - {None}
        if len(ends) == 1:
            # everything at one instant: a few minutes around it, not years
            (t,) = ends
            bottom.set_xlim(t - _ONE_INSTANT_PAD, t + _ONE_INSTANT_PAD)
        locator = AutoDateLocator(tz=UTC)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    else:
        bottom.set_xticks([])
    return fig


#: the formats a chart is written in, by the file's suffix
FORMATS = ("png", "pdf", "svg")


def write_equity_png(report: EquityReport, path: str | Path, *, currency: str,
                     title: str = "capflow equity", drawdown: bool = True) -> Path:
    """Draw `report` (`equity_figure`) into `path`, in the format its suffix names (one
    of `FORMATS`; PNG when it has none); parent directories are created; the path is
    returned."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".") or "png"
    if kind not in FORMATS:
        raise ValueError(f"{path}: a chart is written as {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    equity_figure(report, currency=currency, title=title, drawdown=drawdown).savefig(
        path, format=kind)
    return path
