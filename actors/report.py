"""Equity-curve charts as PNG files.

Drawn on a bare `matplotlib.figure.Figure` with the Agg canvas: no GUI backend, no
pyplot and none of its global state, so it is safe from any thread or actor. Amounts
become floats only here, for plotting.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SIZE = (10.0, 6.0)
_DPI = 100


def _drawdowns(values: list[float]) -> list[float]:
    """Each point's fall below the running peak of the curve, as a value <= 0."""
    out = []
    peak = values[0]
    for v in values:
        peak = max(peak, v)
        out.append(v - peak)
    return out


def write_equity_png(curve: list[tuple[datetime, Decimal]], path: str | Path, *,
                     title: str = "capflow equity", drawdown: bool = True) -> Path:
    """Draw `curve` (as from `actors.stats.equity_curve`) into a PNG at `path`.

    With `drawdown`, a second panel shows the fall below the curve's running peak. An
    empty curve gives a chart that says "no closed trades". Parent directories are
    created; the path is returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if not curve:
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.text(0.5, 0.5, "no closed trades", ha="center", va="center",
                transform=ax.transAxes, fontsize=14, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.savefig(path, format="png")
        return path

    times = [t for t, _ in curve]
    values = [float(v) for _, v in curve]
    if drawdown:
        ax, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_dd = fig.add_subplot(), None
    ax.plot(times, values, drawstyle="steps-post", marker="o" if len(values) < 50 else None,
            markersize=3, linewidth=1.5, color="tab:blue")
    ax.set_title(title)
    ax.set_ylabel("equity")
    ax.grid(True, alpha=0.3)
    if ax_dd is not None:
        dd = _drawdowns(values)
        ax_dd.fill_between(times, dd, 0.0, step="post", color="tab:red", alpha=0.4)
        ax_dd.plot(times, dd, drawstyle="steps-post", linewidth=1.0, color="tab:red")
        ax_dd.set_ylabel("drawdown")
        ax_dd.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    fig.savefig(path, format="png")
    return path
