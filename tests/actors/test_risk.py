"""The risk engine's pure parts: limit resolution, calendar periods, breakers, the order
bucket and the checks, with figures computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from capflow.actors.config import load_config
from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.limits import PRESETS, load_timezone
from capflow.actors.model.orders import OrderSpec
from capflow.actors.model.risk import (
    BreakerState,
    GlobalState,
    Proposal,
    RateBucket,
    observe,
    period_bounds,
    resolve,
)
from capflow.actors.model.settings import ConfigError

T0 = datetime(2026, 1, 7, 15, 30, tzinfo=UTC)  # a Wednesday


def risk(**section):
    return load_config(env={}, risk=section).risk


# -- resolution ---------------------------------------------------------------------------

def test_presets_are_what_the_issue_says():
    a, o, n = PRESETS["atlas"], PRESETS["orion"], PRESETS["nova"]
    assert (a.max_risk_per_trade_pct, a.daily_loss_limit_pct, a.max_drawdown_pct,
            a.max_leverage) == (2, 1, 5, 1)
    assert (o.max_risk_per_trade_pct, o.weekly_loss_limit_pct, o.max_drawdown_pct,
            o.max_leverage) == (3, 5, 10, 1)
    assert (n.max_risk_per_trade_pct, n.monthly_loss_limit_pct, n.max_drawdown_pct,
            n.max_leverage) == (5, 15, 20, 5)


def test_limits_resolve_base_then_risk_profile_then_overrides():
    cfg = risk(limits={"max_open_positions": 10, "max_drawdown_pct": "50"},
               profiles={"tight": {"base": "atlas", "max_risk_per_trade_pct": "0.5"}},
               overrides={"p1": {"max_open_positions": 2}})
    # the preset's 5 % beats the base's 50 %; the custom profile changes one field
    tight = resolve(cfg, "p2", "tight")
    assert (tight.max_risk_per_trade_pct, tight.daily_loss_limit_pct, tight.max_drawdown_pct,
            tight.max_open_positions) == (D("0.5"), 1, 5, 10)
    # per-profile overrides come last
    assert resolve(cfg, "p1", "tight").max_open_positions == 2
    # no risk profile: the base alone
    plain = resolve(cfg, "p3", None)
    assert (plain.max_drawdown_pct, plain.max_risk_per_trade_pct) == (D("50"), None)
    with pytest.raises(InvalidArgument):
        resolve(cfg, "p3", "nope")


def test_default_profile_applies_to_profiles_without_one():
    assert resolve(risk(default_profile="orion"), "p", None).weekly_loss_limit_pct == 5


@pytest.mark.parametrize("section", [
    {"timezone": "Mars/Olympus"},
    {"default_profile": "nope"},
    {"profiles": {"x": {"base": "nope"}}},
    {"limits": {"daily_loss_limit_pct": "0"}},
    {"limits": {"max_drawdown_pct": "101"}},
    {"limits": {"max_open_positions": -1}},
    {"limits": {"order_burst": 0}},
    {"limits": {"max_leverag": 2}},
])
def test_bad_risk_config_is_refused_with_its_place(section):
    with pytest.raises(ConfigError):
        risk(**section)


def test_env_aliases_bots_use_and_capflow_names_win():
    cfg = load_config(env={"MAX_OPEN_POSITIONS": "3", "MAX_OPEN_POSITIONS_PER_SYMBOL": "1",
                           "MAX_SIZE_PER_POSITION_USDT": "500", "OMS_ENABLED": "false"})
    assert (cfg.risk.limits.max_open_positions, cfg.risk.limits.max_open_positions_per_symbol,
            cfg.risk.limits.max_notional, cfg.oms.enabled) == (3, 1, D("500"), False)
    cfg = load_config(env={"MAX_OPEN_POSITIONS": "3",
                           "CAPFLOW_RISK__LIMITS__MAX_OPEN_POSITIONS": "7"})
    assert cfg.risk.limits.max_open_positions == 7


# -- periods ------------------------------------------------------------------------------

def test_calendar_periods_in_utc_and_in_a_time_zone():
    day = period_bounds("daily", T0, UTC)
    assert day == (datetime(2026, 1, 7, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC))
    week = period_bounds("weekly", T0, UTC)  # Monday 5th .. Monday 12th
    assert week == (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC))
    month = period_bounds("monthly", datetime(2026, 12, 31, 23, tzinfo=UTC), UTC)
    assert month == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # New York is UTC-5 in January: its day starts at 05:00 UTC; at 03:00 UTC on the 7th
    # it is still the 6th there
    ny = load_timezone("America/New_York")
    start, end = period_bounds("daily", datetime(2026, 1, 7, 3, tzinfo=UTC), ny)
    assert (start, end) == (datetime(2026, 1, 6, 5, tzinfo=UTC),
                            datetime(2026, 1, 7, 5, tzinfo=UTC))


# -- breakers -----------------------------------------------------------------------------

def test_daily_breaker_trips_at_the_limit_and_resets_at_the_next_day():
    limits = PRESETS["atlas"]  # daily 1 %, max drawdown 5 %
    s, tripped, _ = observe(BreakerState(), limits, D("10000"), T0, UTC)
    assert not tripped and s.periods["daily"].baseline == D("10000") and s.hwm == D("10000")
    s, tripped, _ = observe(s, limits, D("9900.01"), T0 + timedelta(hours=1), UTC)
    assert not tripped  # 0.9999 % < 1 %
    s, tripped, _ = observe(s, limits, D("9900"), T0 + timedelta(hours=2), UTC)
    assert [t.code for t in tripped] == ["DRAWDOWN_DAILY"]
    assert tripped[0].until == datetime(2026, 1, 8, tzinfo=UTC)
    assert tripped[0].loss_pct == D("1.0000")
    # recovering within the day does not lift it
    s, tripped, reset = observe(s, limits, D("10500"), T0 + timedelta(hours=3), UTC)
    assert not tripped and not reset and "daily" in s.trips
    # the next day it resets, and the new baseline is the equity then
    s, tripped, reset = observe(s, limits, D("10500"), datetime(2026, 1, 8, 0, 0, 1,
                                                                tzinfo=UTC), UTC)
    assert [t.kind for t in reset] == ["daily"] and "daily" not in s.trips
    assert s.periods["daily"].baseline == D("10500")


def test_max_drawdown_is_from_the_high_water_mark_and_does_not_reset_by_itself():
    limits = PRESETS["atlas"]
    s, _, _ = observe(BreakerState(), limits, D("10000"), T0, UTC)
    s, _, _ = observe(s, limits, D("12000"), T0 + timedelta(days=3), UTC)
    # 5 % under 12,000 is 11,400: the daily breaker (baseline 12,000 that day) and the
    # max drawdown both trip
    s, tripped, _ = observe(s, limits, D("11400"), T0 + timedelta(days=3, hours=1), UTC)
    assert sorted(t.code for t in tripped) == ["DRAWDOWN_DAILY", "MAX_DRAWDOWN"]
    s, _, reset = observe(s, limits, D("11400"), T0 + timedelta(days=40), UTC)
    assert [t.kind for t in reset] == ["daily"] and s.trips["max"].until is None


def test_deposits_and_withdrawals_are_not_gains_or_losses():
    limits = PRESETS["atlas"]
    s, _, _ = observe(BreakerState(), limits, D("10000"), T0, UTC)
    s = s.shifted(D("-5000"))  # a withdrawal of half the equity
    s, tripped, _ = observe(s, limits, D("5000"), T0 + timedelta(minutes=1), UTC)
    assert not tripped and s.hwm == D("5000")


# -- the order bucket ----------------------------------------------------------------------

def test_order_bucket_refills_at_its_rate():
    limits = resolve(risk(limits={"order_rate_per_min": "6", "order_burst": 2}), "p", None)
    b = RateBucket()
    assert b.available(limits, T0) == 2
    b.take(limits, T0)
    b.take(limits, T0)
    assert b.available(limits, T0) == 0
    # 6 a minute: one token every 10 s
    assert b.available(limits, T0 + timedelta(seconds=5)) == D("0.5")
    assert b.available(limits, T0 + timedelta(seconds=10)) == 1
    assert b.available(limits, T0 + timedelta(hours=1)) == 2


# -- the checks on a ledger ---------------------------------------------------------------

def _ledger(**limits) -> Ledger:
    led = Ledger("p", "USDT", 2)
    led.deposit("10000", "k", T0)
    led.risk.limits = resolve(risk(limits=limits), "p", None)
    return led


def _order(led: Ledger, n: int, symbol="BTCUSDT", qty="1", price="100", sl=None):
    spec = OrderSpec(order_id=f"o{n}", position_id=f"o{n}", symbol=symbol, side="BUY",
                     qty=D(qty), price=D(price), sl_price=None if sl is None else D(sl))
    return led.open_order(spec, D(qty) * D(price), T0)


def test_open_entry_orders_count_as_open_positions():
    led = _ledger(max_open_positions=2, max_open_positions_per_symbol=1)
    assert not hasattr(_order(led, 1), "code")
    denied = _order(led, 2)
    assert (denied.code, denied.details["reason"], denied.details["value"]) == (
        "RISK_REJECTED", "MAX_OPEN_POSITIONS_PER_SYMBOL", 2)
    assert not hasattr(_order(led, 3, symbol="ETHUSDT"), "code")
    denied = _order(led, 4, symbol="SOLUSDT")
    assert (denied.details["reason"], denied.details["limit"]) == ("MAX_OPEN_POSITIONS", 2)
    # a denial changed nothing
    assert len(led.orders) == 2 and led.reserved_for_orders == D("200.00")


def test_risk_per_trade_is_the_loss_at_the_stop_over_equity():
    led = _ledger(max_risk_per_trade_pct="2")
    # 10 units, stop 20 under the price: 200 at risk of 10,000 = 2 %: allowed
    assert not hasattr(_order(led, 1, qty="10", price="100", sl="80"), "code")
    # 10.01 units: 200.2 = 2.002 %: refused
    denied = _order(led, 2, qty="10.01", price="100", sl="80")
    assert (denied.details["reason"], denied.details["value"]) == ("MAX_RISK_PER_TRADE",
                                                                   D("2.0020"))
    # no stop: the whole notional is at risk
    assert _order(led, 3, qty="3", price="100").details["reason"] == "MAX_RISK_PER_TRADE"


def test_global_kill_switch_beats_an_active_profile():
    led = _ledger()
    led.risk.global_state = lambda: GlobalState("REDUCE_ONLY", "desk", "ops")
    denied = _order(led, 1)
    assert (denied.details["reason"], denied.details["scope"]) == ("REDUCE_ONLY", "global")
    led.risk.global_state = lambda: GlobalState("ACTIVE")
    led.state = "HALTED"
    assert _order(led, 2).details["reason"] == "TRADING_HALTED"


def test_what_if_changes_nothing():
    led = _ledger(order_rate_per_min="0.001", order_burst=1, max_exposure="150")
    checks = led.what_if(Proposal("BTCUSDT", "BUY", D("1"), D("100")), D("101"), T0)
    by = {c.check: c for c in checks}
    assert by["order_rate"].ok and by["max_exposure"].headroom == D("50")
    assert by["capital"].limit == D("10000.00")
    # the bucket was not touched: the one token is still there for a real order
    assert not hasattr(_order(led, 1), "code")
    assert _order(led, 2).details["reason"] == "ORDER_RATE"
