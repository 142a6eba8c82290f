"""Trading statistics over position records: win rate, profit factor, drawdown, equity.

Pure functions, no I/O. A position record is anything with the attributes of
`actors.messages.PositionCapital` that matter here (``position_id``, ``symbol``,
``status``, ``realized_pnl``, ``fees``, ``close_reason``, ``strategy``, ``exchange``,
``opened_at``, ``closed_at``). Only CLOSED positions are trades, and a trade's PnL is net
of fees: ``realized_pnl - fees``. Sums are exact; averages and ratios are rounded half
to even.

`equity_report` is what the equity chart (`actors.report`) draws: the allocation, a step
per closed trade, the open positions valued at market. Its drawdowns and the statistics'
`max_drawdown` come from one function (`drawdowns`) over one path (the cumulative net
PnL in closing order), so the chart and `stats` cannot disagree.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from capflow.actors.model.money import CONTEXT, MAX_DECIMAL_PLACES, ZERO, round_half_even

OPEN, CLOSED = "OPEN", "CLOSED"
GROUP_KEYS = frozenset({"strategy", "symbol", "exchange"})
#: places of the ratios (win rate, profit factor, drawdown fraction)
RATIO_PLACES = 4


class PositionLike(Protocol):
    """What the statistics read from a position record."""

    position_id: str
    symbol: str
    status: str
    realized_pnl: Decimal
    fees: Decimal
    close_reason: str | None
    strategy: str | None
    exchange: str | None
    opened_at: datetime
    closed_at: datetime | None


class Stats(msgspec.Struct, frozen=True):
    total_positions: int
    open_positions: int
    closed_positions: int
    #: closed trades with net PnL above / below zero; breakeven trades are neither
    winning_trades: int
    losing_trades: int
    tp_count: int
    sl_count: int
    manual_count: int
    #: exact sums of net PnL of closed trades; gross_loss is <= 0
    total_pnl: Decimal
    gross_profit: Decimal
    gross_loss: Decimal
    #: winning / closed, 4 places; 0 without closed trades
    winrate: Decimal
    #: rounded to the requested places; None when nothing to average
    avg_pnl_per_trade: Decimal | None
    avg_pnl_win: Decimal | None
    avg_pnl_loss: Decimal | None
    #: gross_profit / |gross_loss|, 4 places; None without losses
    profit_factor: Decimal | None
    #: largest peak-to-trough fall of cumulative net PnL (>= 0), exact
    max_drawdown: Decimal
    #: that fall over the equity at its peak (initial_equity + peak), 4 places
    max_drawdown_pct: Decimal | None


def net_pnl(position: PositionLike) -> Decimal:
    """A position's PnL after fees."""
    with decimal.localcontext(CONTEXT):
        return position.realized_pnl - position.fees


def _check_places(places: int) -> None:
    if isinstance(places, bool) or not isinstance(places, int) \
            or not 0 <= places <= MAX_DECIMAL_PLACES:
        raise ValueError(f"places must be an int from 0 to {MAX_DECIMAL_PLACES}, got {places!r}")


def _check_status(position: PositionLike) -> None:
    if position.status not in (OPEN, CLOSED):
        raise ValueError(f"position {position.position_id!r} has unknown status "
                         f"{position.status!r}")
    if position.status == CLOSED and position.closed_at is None:
        raise ValueError(f"closed position {position.position_id!r} has no closed_at")


def _closed_in_order(positions: Iterable[PositionLike]) -> list[PositionLike]:
    closed = []
    for p in positions:
        _check_status(p)
        if p.status == CLOSED:
            closed.append(p)
    closed.sort(key=lambda p: (p.closed_at, p.position_id))
    return closed


def _ratio(numerator: Decimal, denominator: Decimal | int, places: int) -> Decimal:
    with decimal.localcontext(CONTEXT):
        return round_half_even(numerator / denominator, places)


def drawdowns(values: Iterable[Decimal]) -> list[tuple[Decimal, Decimal]]:
    """(fall, peak) at each of `values`: how far it is below the running peak of the
    values so far (>= 0, exact), and that peak. The first value is the first peak.

    The one drawdown computation: `compute_stats` takes its `max_drawdown` from it, and
    the report's drawdown panel draws it, both over `pnl_path`."""
    out: list[tuple[Decimal, Decimal]] = []
    peak: Decimal | None = None
    with decimal.localcontext(CONTEXT):
        for value in values:
            if peak is None or value > peak:
                peak = value
                out.append((ZERO, peak))
            else:
                out.append((peak - value, peak))
    return out


def max_drawdown(values: Iterable[Decimal]) -> tuple[Decimal, Decimal]:
    """(largest fall, the peak it fell from) of `drawdowns(values)`: (0, the first value)
    when nothing falls, (0, 0) for no values. The first of equally deep falls wins, so
    its peak is the earliest one."""
    worst, worst_peak = ZERO, None
    for fall, peak in drawdowns(values):
        if worst_peak is None or fall > worst:
            worst, worst_peak = fall, peak
    return worst, ZERO if worst_peak is None else worst_peak


def _pnl_path(closed: list[PositionLike]) -> list[Decimal]:
    """0, then the cumulative net PnL after each of the `closed` trades, in their order."""
    path = [ZERO]
    with decimal.localcontext(CONTEXT):
        for p in closed:
            path.append(path[-1] + net_pnl(p))
    return path


def compute_stats(positions: Iterable[PositionLike], *, places: int = 2,
                  initial_equity: Decimal | None = None) -> Stats:
    """Statistics of `positions`; averages rounded to `places` decimal places.

    `initial_equity`, when positive, turns the max drawdown into a fraction of the
    equity at its peak.
    """
    _check_places(places)
    everything = list(positions)
    closed = _closed_in_order(everything)
    pnls = [net_pnl(p) for p in closed]
    wins = [x for x in pnls if x > 0]
    losses = [x for x in pnls if x < 0]
    reasons = [p.close_reason for p in closed]
    with decimal.localcontext(CONTEXT):
        total = sum(pnls, ZERO)
        gross_profit = sum(wins, ZERO)
        gross_loss = sum(losses, ZERO)
    # the path the report draws (over the allocation), and its drawdown panel
    drawdown, peak = max_drawdown(_pnl_path(closed))
    drawdown_pct = None
    if initial_equity is not None and initial_equity > 0:
        with decimal.localcontext(CONTEXT):
            drawdown_pct = _ratio(drawdown, initial_equity + peak, RATIO_PLACES)
    return Stats(
        total_positions=len(everything),
        open_positions=len(everything) - len(closed),
        closed_positions=len(closed),
        winning_trades=len(wins),
        losing_trades=len(losses),
        tp_count=reasons.count("tp"),
        # a trailing stop is a stop-loss that moved
        sl_count=reasons.count("sl") + reasons.count("trail"),
        # a flatten closes by hand too, every position at once
        manual_count=reasons.count("manual") + reasons.count("flatten"),
        total_pnl=total,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        winrate=(_ratio(Decimal(len(wins)), len(closed), RATIO_PLACES) if closed
                 else round_half_even(ZERO, RATIO_PLACES)),
        avg_pnl_per_trade=_ratio(total, len(closed), places) if closed else None,
        avg_pnl_win=_ratio(gross_profit, len(wins), places) if wins else None,
        avg_pnl_loss=_ratio(gross_loss, len(losses), places) if losses else None,
        profit_factor=_ratio(gross_profit, -gross_loss, RATIO_PLACES) if losses else None,
        max_drawdown=drawdown,
        max_drawdown_pct=drawdown_pct,
    )


def group_stats(positions: Iterable[PositionLike], by: str, *, places: int = 2,
                initial_equity: Decimal | None = None) -> dict[str, Stats]:
    """`compute_stats` per value of the attribute `by` ("strategy", "symbol" or
    "exchange"); positions without one are grouped under "". Keys come sorted."""
    if by not in GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}: use one of {sorted(GROUP_KEYS)}")
    _check_places(places)
    groups: dict[str, list[PositionLike]] = {}
    for p in positions:
        key = getattr(p, by)
        groups.setdefault("" if key is None else str(key), []).append(p)
    return {key: compute_stats(groups[key], places=places, initial_equity=initial_equity)
            for key in sorted(groups)}


def profiles_stats(positions: Iterable[PositionLike], allocations: Iterable[Decimal],
                   group_by: str | None = None
                   ) -> tuple[Stats, dict[str, Stats] | None, Decimal | None]:
    """The statistics of one or more profiles, as `stats.get`, `capflow stats` and the
    report give them: over all their positions, and per value of `group_by` when given,
    with the sum of the profiles' allocations as the initial equity (None when it is
    zero: no drawdown fraction). Returns (overall, groups or None, initial equity)."""
    positions = list(positions)
    initial = sum(allocations, Decimal(0)) or None
    overall = compute_stats(positions, initial_equity=initial)
    groups = None
    if group_by is not None:
        groups = group_stats(positions, group_by, initial_equity=initial)
    return overall, groups, initial


def equity_curve(positions: Iterable[PositionLike], *,
                 start: Decimal = ZERO) -> list[tuple[datetime, Decimal]]:
    """`start` plus the cumulative net PnL after each closed trade, ordered by
    (closed_at, position_id); one point per trade, stamped with its closed_at."""
    curve: list[tuple[datetime, Decimal]] = []
    with decimal.localcontext(CONTEXT):
        equity = start
        for p in _closed_in_order(positions):
            equity += net_pnl(p)
            curve.append((p.closed_at, equity))
    return curve


# -- the equity report ----------------------------------------------------------------

#: where the price of an open position came from, most trusted first
MARK_SERVER, MARK_FILL, MARK_ENTRY = "market.price", "last fill", "entry price"
MARK_SOURCES = (MARK_SERVER, MARK_FILL, MARK_ENTRY)


class OpenPositionLike(PositionLike, Protocol):
    """What marking an open position to market reads, besides `PositionLike`."""

    side: str
    qty_open: Decimal
    qty_total: Decimal
    reserved: Decimal
    entry_notional: Decimal
    entry_price: Decimal | None


class Mark(msgspec.Struct, frozen=True):
    """A symbol's price for valuing open positions, and where it came from."""

    price: Decimal
    #: one of MARK_SOURCES
    source: str
    #: when the price was seen (a fill's time); None: current, as of the report
    at: datetime | None = None


class EquityPoint(msgspec.Struct, frozen=True):
    #: the first position's opening for the start (None without positions), else the
    #: trade's closed_at
    at: datetime | None
    equity: Decimal
    #: the fall below the running peak (`drawdowns` of the net PnL path), >= 0
    drawdown: Decimal


class MarkedEnd(msgspec.Struct, frozen=True):
    """The realized equity plus the open positions valued at market."""

    at: datetime | None
    equity: Decimal
    open_positions: int
    #: the MARK_SOURCES the prices came from, in that order, each once
    sources: tuple[str, ...]


class EquityReport(msgspec.Struct, frozen=True):
    """What the equity chart draws: amounts exact, floats only when drawn."""

    #: the allocation the curve starts at
    start: Decimal
    #: the start, then one point per closed trade in (closed_at, position_id) order
    points: list[EquityPoint]
    #: the deepest point of the drawdowns: `compute_stats(...).max_drawdown`
    max_drawdown: Decimal
    closed_trades: int
    #: None without open positions
    marked: MarkedEnd | None


def open_pnl(position: OpenPositionLike, price: Decimal) -> Decimal:
    """An open position's net PnL at `price`, as the ledger values equity: what its exits
    realized, less its fees, plus its open quantity's value at `price` against the cost
    basis still reserved (the reverse for a short)."""
    with decimal.localcontext(CONTEXT):
        value = position.qty_open * price
        unrealized = (value - position.reserved if position.side == "BUY"
                      else position.reserved - value)
        return net_pnl(position) + unrealized


def _entry_price(position: OpenPositionLike) -> Decimal:
    with decimal.localcontext(CONTEXT):
        return position.entry_price or position.entry_notional / position.qty_total


def equity_report(positions: Iterable[OpenPositionLike], *, start: Decimal = ZERO,
                  marks: dict[str, Mark] | None = None,
                  as_of: datetime | None = None) -> EquityReport:
    """The equity series of `positions`: `start` (the allocation), a step at each closed
    trade by its net PnL, and, with open positions, an end that values them at
    `marks[symbol]` (at their entry price where a symbol has no mark). The end is stamped
    with the time of the latest price used (`as_of` for a current one), never before
    the last point.

    The drawdowns are those of the same net PnL path `compute_stats` measures, so the
    deepest equals its `max_drawdown`."""
    everything = list(positions)
    closed = _closed_in_order(everything)
    path = _pnl_path(closed)
    falls = drawdowns(path)
    deepest, _ = max_drawdown(path)
    times: list[datetime | None] = [p.closed_at for p in closed]
    opened = [p.opened_at for p in everything]
    first = min(opened + times[:1]) if opened else None  # type: ignore[type-var]
    with decimal.localcontext(CONTEXT):
        points = [EquityPoint(at, start + value, fall)
                  for at, value, (fall, _) in zip([first, *times], path, falls, strict=True)]
        marked = None
        still_open = [p for p in everything if p.status == OPEN]
        if still_open:
            marks = marks or {}
            used, equity, seen = set(), points[-1].equity, []
            for p in still_open:
                mark = marks.get(p.symbol) or Mark(_entry_price(p), MARK_ENTRY, p.opened_at)
                if mark.source not in MARK_SOURCES:
                    raise ValueError(f"mark of {p.symbol!r} has unknown source "
                                     f"{mark.source!r}")
                used.add(mark.source)
                seen.append(mark.at or as_of)
                equity += open_pnl(p, mark.price)
            at = max((t for t in [*seen, points[-1].at] if t is not None), default=None)
            marked = MarkedEnd(at, equity, len(still_open),
                               tuple(x for x in MARK_SOURCES if x in used))
    return EquityReport(start, points, deepest, len(closed), marked)


def stats_map(s: Stats) -> dict[str, Any]:
    """The fields of `s` as a plain dict; Decimals stay Decimal."""
    return {name: getattr(s, name) for name in s.__struct_fields__}
