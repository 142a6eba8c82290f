"""Risk limits and the presets they start from: a profile's pre-trade limits,
an account's limits across its profiles, the `[risk]` section, the time zone
of the loss periods."""

from __future__ import annotations

from datetime import UTC, tzinfo
from decimal import Decimal
from typing import Annotated

import msgspec


class RiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Pre-trade limits of a profile (`actors.risk`). Unset (None) is no limit.
    Percentages are in percent of the profile's equity: ``2`` means 2 %."""

    #: loss at the stop (or the whole notional without one) over equity
    max_risk_per_trade_pct: Decimal | None = None
    #: loss since the start of the calendar day / week (Monday) / month, over the
    #: equity at its start; a breaker trips at the limit until the period ends
    daily_loss_limit_pct: Decimal | None = None
    weekly_loss_limit_pct: Decimal | None = None
    monthly_loss_limit_pct: Decimal | None = None
    #: fall from the equity high-water mark; reset only by hand (`risk.reset`)
    max_drawdown_pct: Decimal | None = None
    #: total open notional at most this times equity (1: no leverage)
    max_leverage: Decimal | None = None
    #: open positions, counting entry orders that will open one
    max_open_positions: int | None = None
    max_open_positions_per_symbol: int | None = None
    #: notional of one position (an entry order), in the profile's currency
    max_notional: Decimal | None = None
    #: total open notional (positions at market, working entry orders, this order)
    max_exposure: Decimal | None = None
    #: smallest order notional
    min_notional: Decimal | None = None
    #: when set, only these symbols; never the denied ones
    allowed_symbols: list[str] | None = None
    denied_symbols: list[str] | None = None
    #: orders placed per minute (a token bucket holding `order_burst` tokens)
    order_rate_per_min: Decimal | None = None
    order_burst: int | None = None
    #: protections (actors/model/protections.py): no entry on a symbol for this many
    #: seconds after a position on it closed (`cooldown_after`: "any" close, or "sl" only)
    cooldown_s: Decimal | None = None
    cooldown_after: str | None = None
    #: `sl_streak_count` stop-losses within `sl_streak_window_s` lock entries for
    #: `sl_streak_lock_s` from the last of them (`sl_streak_scope`: the "profile", or
    #: only the "symbol" they closed on)
    sl_streak_count: int | None = None
    sl_streak_window_s: Decimal | None = None
    sl_streak_lock_s: Decimal | None = None
    sl_streak_scope: str | None = None
    #: an entry beyond a limit: "refuse" it (the default) or "shrink" it to what the
    #: limits allow (actors/model/sizing.py), down to the venue's minimum or `min_qty`
    sizing: str | None = None
    min_qty: Decimal | None = None

    def __post_init__(self) -> None:
        _check_protections(self)
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if isinstance(v, Decimal) and not v.is_finite():
                raise ValueError(f"{name} must be a finite number")
        for name in ("max_risk_per_trade_pct", "daily_loss_limit_pct",
                     "weekly_loss_limit_pct", "monthly_loss_limit_pct", "max_drawdown_pct"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 100:
                raise ValueError(f"{name} must be a percentage in (0, 100]")
        for name in ("max_leverage", "max_notional", "max_exposure", "order_rate_per_min"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be greater than 0")
        for name in ("max_open_positions", "max_open_positions_per_symbol"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_notional is not None and self.min_notional < 0:
            raise ValueError("min_notional must not be negative")
        if self.order_burst is not None and self.order_burst < 1:
            raise ValueError("order_burst must be at least 1")


CHOICES = {"cooldown_after": ("any", "sl"), "sl_streak_scope": ("profile", "symbol"),
           "sizing": ("refuse", "shrink")}
#: the longest stop-loss streak counted (the ledger keeps its most recent closes)
MAX_SL_STREAK = 100
#: the longest cooldown, streak window and lock, in seconds (a year): a longer one would
#: put its end past what a date can hold, and an entry's check could not be computed
MAX_PROTECTION_S = Decimal(366 * 86400)


def _check_protections(limits: RiskLimits) -> None:
    for name, allowed in CHOICES.items():
        v = getattr(limits, name)
        if v is not None and v not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}")
    for name in ("cooldown_s", "sl_streak_window_s", "sl_streak_lock_s", "min_qty"):
        v = getattr(limits, name)
        if v is not None and (not v.is_finite() or v <= 0):
            raise ValueError(f"{name} must be a number greater than 0")
        if v is not None and name != "min_qty" and v > MAX_PROTECTION_S:
            raise ValueError(f"{name} must be at most {MAX_PROTECTION_S} (366 days)")
    n = limits.sl_streak_count
    if n is not None:
        if not 1 <= n <= MAX_SL_STREAK:
            raise ValueError(f"sl_streak_count must be in 1..{MAX_SL_STREAK}")
        if limits.sl_streak_window_s is None or limits.sl_streak_lock_s is None:
            raise ValueError("sl_streak_count needs sl_streak_window_s and sl_streak_lock_s")


class CustomRiskProfile(RiskLimits, frozen=True, forbid_unknown_fields=True):
    """A risk profile of the config: a preset (`base`) with fields changed, or new."""

    base: str | None = None


class AccountRiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits across all the profiles of one broker account (its manager enforces them).
    Money is in the account's currency."""

    max_open_positions: int | None = None
    max_open_positions_per_symbol: int | None = None
    #: gross exposure of all the account's profiles together (positions at market and
    #: working entry orders, longs and shorts both adding), this entry included
    max_gross_exposure: Decimal | None = None
    #: loss of all the account's profiles together since the start of the day (in
    #: [risk] timezone), and since they were created: crossing either halts the account
    #: (HALTED, by "account-risk") until it is resumed by hand
    daily_loss_limit: Decimal | None = None
    max_total_loss: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("max_open_positions", "max_open_positions_per_symbol"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_gross_exposure", "daily_loss_limit", "max_total_loss"):
            v = getattr(self, name)
            if v is not None and (not v.is_finite() or v <= 0):
                raise ValueError(f"{name} must be a number greater than 0")

    @property
    def has_slots(self) -> bool:
        return (self.max_open_positions is not None
                or self.max_open_positions_per_symbol is not None)

    @property
    def has_loss_limits(self) -> bool:
        return self.daily_loss_limit is not None or self.max_total_loss is not None


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: time zone of the daily / weekly / monthly loss periods
    timezone: str = "UTC"
    #: risk profile of a profile created without one (None: only `limits`)
    default_profile: str | None = None
    #: limits every profile starts from; its risk profile and its overrides come on top
    limits: RiskLimits = msgspec.field(default_factory=RiskLimits)
    #: custom risk profiles by name (the presets atlas, orion, nova always exist)
    profiles: dict[str, CustomRiskProfile] = msgspec.field(default_factory=dict)
    #: per trading profile (by profile_id): fields that override its risk profile
    overrides: dict[str, RiskLimits] = msgspec.field(default_factory=dict)
    #: per broker account: limits across its profiles
    accounts: dict[str, AccountRiskLimits] = msgspec.field(default_factory=dict)
    #: risk is marked to market on price ticks: each profile holding the symbol has its
    #: breakers (and its account's loss limits) evaluated at most once per this many
    #: seconds (0: on every tick)
    mark_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 0.25

    def __post_init__(self) -> None:

        load_timezone(self.timezone)
        for name, custom in self.profiles.items():
            if custom.base is not None and custom.base not in PRESETS:
                raise ValueError(f"[risk.profiles.{name}] base {custom.base!r} is not a "
                                 f"preset ({', '.join(PRESETS)})")
        if (self.default_profile is not None and self.default_profile not in PRESETS
                and self.default_profile not in self.profiles):
            raise ValueError(f"[risk] default_profile {self.default_profile!r} is neither "
                             "a preset nor in [risk.profiles]")


#: the built-in risk profiles (percent of equity)
PRESETS: dict[str, RiskLimits] = {
    # conservative
    "atlas": RiskLimits(max_risk_per_trade_pct=Decimal(2), daily_loss_limit_pct=Decimal(1),
                        max_drawdown_pct=Decimal(5), max_leverage=Decimal(1)),
    # moderate
    "orion": RiskLimits(max_risk_per_trade_pct=Decimal(3), weekly_loss_limit_pct=Decimal(5),
                        max_drawdown_pct=Decimal(10), max_leverage=Decimal(1)),
    # aggressive
    "nova": RiskLimits(max_risk_per_trade_pct=Decimal(5), monthly_loss_limit_pct=Decimal(15),
                       max_drawdown_pct=Decimal(20), max_leverage=Decimal(5)),
}


def load_timezone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        raise ValueError(f"[risk] timezone {name!r} is not a known time zone") from None
