"""Trading statistics over position records: win rate, profit factor, drawdown, equity.

Pure functions, no I/O. A position record is anything with the attributes of
`actors.messages.PositionCapital` that matter here (``position_id``, ``symbol``,
``status``, ``realized_pnl``, ``fees``, ``close_reason``, ``strategy``, ``exchange``,
``opened_at``, ``closed_at``). Only CLOSED positions are trades, and a trade's PnL is net
of fees: ``realized_pnl - fees``. Sums are exact; averages and ratios are rounded half
to even.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from capflow.actors.money import CONTEXT, ZERO, round_half_even

OPEN, CLOSED = "OPEN", "CLOSED"
GROUP_KEYS = frozenset({"strategy", "symbol", "exchange"})
#: places of the ratios (win rate, profit factor, drawdown fraction)
RATIO_PLACES = 4
_MAX_PLACES = 18


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
            or not 0 <= places <= _MAX_PLACES:
        raise ValueError(f"places must be an int from 0 to {_MAX_PLACES}, got {places!r}")


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


def _max_drawdown(pnls: Iterable[Decimal]) -> tuple[Decimal, Decimal]:
    """(largest fall, the peak it fell from) of the cumulative sum of `pnls` from 0.

    The first of equally deep falls wins, so its peak is the earliest one.
    """
    with decimal.localcontext(CONTEXT):
        cumulative = peak = ZERO
        worst, worst_peak = ZERO, ZERO
        for pnl in pnls:
            cumulative += pnl
            if cumulative > peak:
                peak = cumulative
            elif peak - cumulative > worst:
                worst, worst_peak = peak - cumulative, peak
        return worst, worst_peak


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
    drawdown, peak = _max_drawdown(pnls)
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
        sl_count=reasons.count("sl"),
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


def stats_map(s: Stats) -> dict[str, Any]:
    """The fields of `s` as a plain dict; Decimals stay Decimal."""
    return {name: getattr(s, name) for name in s.__struct_fields__}
