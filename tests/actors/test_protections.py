"""The protections' arithmetic on closes (actors/model/protections.py): the cooldown's
time left, the stop-loss streak's window and lock, exactly at their bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from capflow.actors.model.limits import RiskLimits
from capflow.actors.model.protections import Close, cooldown, protection_checks, sl_streak

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def test_cooldown_runs_from_the_last_close_and_ends_on_time():
    limits = RiskLimits(cooldown_s=Decimal("60"))
    closes = [Close("A", at(0), "tp"), Close("A", at(30), "manual"), Close("B", at(50), "sl")]
    c = cooldown(limits, closes, "A", at(40.25))
    assert (c.ok, c.value, c.headroom, c.until) == (False, Decimal("10.25"),
                                                    Decimal("-49.75"), at(90))
    assert cooldown(limits, closes, "A", at(90)).ok is True
    assert cooldown(limits, closes, "C", at(40)).ok is True
    assert cooldown(RiskLimits(), closes, "A", at(40)) is None
    # after stop-losses only: the manual close of A does not count
    only_sl = RiskLimits(cooldown_s=Decimal("60"), cooldown_after="sl")
    assert cooldown(only_sl, closes, "A", at(40)).ok is True
    assert cooldown(only_sl, closes, "B", at(100)).until == at(110)


def test_sl_streak_needs_its_count_within_the_window():
    limits = RiskLimits(sl_streak_count=2, sl_streak_window_s=Decimal("100"),
                        sl_streak_lock_s=Decimal("50"))
    apart = [Close("A", at(0), "sl"), Close("B", at(101), "sl")]
    assert sl_streak(limits, apart, "A", at(102)).ok is True
    within = [Close("A", at(0), "sl"), Close("X", at(10), "tp"), Close("B", at(100), "sl")]
    c = sl_streak(limits, within, "C", at(120))
    assert (c.ok, c.value, c.until, c.headroom) == (False, 2, at(150), Decimal(-30))
    assert sl_streak(limits, within, "C", at(150)).ok is True
    # per symbol: only the stop-losses of the entry's symbol count
    per = RiskLimits(sl_streak_count=2, sl_streak_window_s=Decimal("100"),
                     sl_streak_lock_s=Decimal("50"), sl_streak_scope="symbol")
    assert sl_streak(per, within, "A", at(120)).ok is True
    both = [*within, Close("A", at(90), "sl")]
    assert sl_streak(per, both, "A", at(120)).until == at(140)
    assert sl_streak(per, [*within, Close("A", at(110), "sl")], "A", at(120)).ok is True
    # a close after `now` (a clock set back) is not counted
    assert [c.check for c in protection_checks(limits, within, "A", at(5))] == ["sl_streak"]
    assert protection_checks(limits, within, "A", at(5))[0].ok is True


def test_a_protection_longer_than_a_year_is_refused_and_a_year_computes():
    # cooldown_s = 1e12 put the cooldown's end past year 9999: every entry's check on a
    # symbol that had closed raised OverflowError instead of answering
    for name in ("cooldown_s", "sl_streak_window_s", "sl_streak_lock_s"):
        fields = {"sl_streak_count": 1, "sl_streak_window_s": Decimal(60),
                  "sl_streak_lock_s": Decimal(60), name: Decimal("1e12")}
        with pytest.raises(ValueError, match=name):
            RiskLimits(**fields)
    year = Decimal(366 * 86400)
    limits = RiskLimits(cooldown_s=year, sl_streak_count=1, sl_streak_window_s=year,
                        sl_streak_lock_s=year)
    closes = [Close("A", at(0), "sl")]
    checks = protection_checks(limits, closes, "A", at(1))
    assert [(c.check, c.ok, c.until) for c in checks] == [
        ("cooldown", False, at(0) + timedelta(days=366)),
        ("sl_streak", False, at(0) + timedelta(days=366))]
