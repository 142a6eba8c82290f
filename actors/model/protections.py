"""Protections, the pure part: what a profile's recent closes forbid.

- the cooldown: no new entry on a symbol for `cooldown_s` after a position on it closed
  (any close, or with ``cooldown_after = "sl"`` only a stop-loss), reason `COOLDOWN`;
- the stop-loss streak: `sl_streak_count` stop-losses within `sl_streak_window_s` lock
  entries (of the profile, or with ``sl_streak_scope = "symbol"`` of that symbol) for
  `sl_streak_lock_s` from the last of them, reason `SL_STREAK_LOCK`.

Neither keeps state of its own: both are derived from the closes (symbol, time,
reason), which the ledger keeps as positions close and reads back from the stored
positions when it loads, so a restart changes nothing. Times are capflow's clock's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec

from capflow.actors.model.limits import RiskLimits
from capflow.actors.model.risk import Check

#: the closes a ledger keeps (the most recent; at least `MAX_SL_STREAK` of them)
CLOSES_KEPT = 1024


class Close(msgspec.Struct, frozen=True):
    """A position that closed: on what, when, and why (`CLOSE_REASONS`; None: unknown)."""

    symbol: str
    at: datetime
    reason: str | None = None


def _seconds(value: Decimal) -> timedelta:
    return timedelta(seconds=float(value))


def _left(until: datetime, now: datetime) -> Decimal:
    """Seconds from `now` to `until`, exact to the microsecond ("45", "0.25")."""
    us = (until - now) // timedelta(microseconds=1)
    if us % 1_000_000 == 0:
        return Decimal(us // 1_000_000)
    return Decimal(us).scaleb(-6).normalize()


def cooldown(limits: RiskLimits, closes: Iterable[Close], symbol: str,
             now: datetime) -> Check | None:
    """The cooldown check of an entry on `symbol`, or None without a cooldown."""
    if limits.cooldown_s is None:
        return None
    sl_only = limits.cooldown_after == "sl"
    last = max((c.at for c in closes if c.symbol == symbol and c.at <= now
                and (not sl_only or c.reason == "sl")), default=None)
    until = None if last is None else last + _seconds(limits.cooldown_s)
    if until is None or now >= until:
        return Check("cooldown", "COOLDOWN", True, limits.cooldown_s,
                     None if last is None else _left(now, last))
    return Check("cooldown", "COOLDOWN", False, limits.cooldown_s, _left(now, last),
                 _left(now, until), until=until)


def sl_streak(limits: RiskLimits, closes: Iterable[Close], symbol: str,
              now: datetime) -> Check | None:
    """The stop-loss streak check of an entry on `symbol`, or None without one. The
    lock of a streak runs from its last stop-loss; the latest lock that has not ended
    applies."""
    n = limits.sl_streak_count
    if n is None or limits.sl_streak_window_s is None or limits.sl_streak_lock_s is None:
        return None
    window = _seconds(limits.sl_streak_window_s)
    lock = _seconds(limits.sl_streak_lock_s)
    per_symbol = limits.sl_streak_scope == "symbol"
    times = sorted(c.at for c in closes if c.reason == "sl" and c.at <= now
                   and (not per_symbol or c.symbol == symbol))
    until = None
    for j in range(n - 1, len(times)):
        if times[j] - times[j - n + 1] <= window:
            end = times[j] + lock
            if end > now and (until is None or end > until):
                until = end
    recent = sum(1 for t in times if t > now - window)
    if until is None:
        return Check("sl_streak", "SL_STREAK_LOCK", True, n, recent, n - recent)
    return Check("sl_streak", "SL_STREAK_LOCK", False, n, max(recent, n), _left(now, until),
                 until=until)


def protection_checks(limits: RiskLimits, closes: Iterable[Close], symbol: str,
                      now: datetime) -> list[Check]:
    if limits.cooldown_s is None and limits.sl_streak_count is None:
        return []  # the common case: no walk of the closes on every entry
    closes = tuple(closes)
    return [c for c in (cooldown(limits, closes, symbol, now),
                        sl_streak(limits, closes, symbol, now)) if c is not None]

