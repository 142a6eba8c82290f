"""Pre-trade risk, the pure part: risk profiles, the checks, drawdown breakers, the order
rate bucket.

No I/O and no threads. A profile's `Ledger` runs these inside its actor, so the checks
and the capital reservation that follows are one step: a burst of signals cannot slip
past a limit between a check and its order. Limits across the profiles of a broker
account are counted by that account's manager (`actors.account`), which owns them.

Every check yields a `Check` (limit, value, headroom). An order goes through only if all
pass; the first that fails gives the reason code of the contract (`MAX_OPEN_POSITIONS`,
`DRAWDOWN_DAILY`, ...). `risk.check` runs them all on a hypothetical order and changes
nothing.

Equity is ``allocated + realized_pnl - fees`` plus the unrealized PnL of the open
positions at the market's last price (the entry price before any tick).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.limits import PRESETS, CustomRiskProfile, RiskConfig, RiskLimits
from capflow.actors.model.money import CONTEXT, ZERO

HUNDRED = Decimal(100)


#: breaker kind -> (the limit's field, the reason code)
BREAKERS = {
    "daily": ("daily_loss_limit_pct", "DRAWDOWN_DAILY"),
    "weekly": ("weekly_loss_limit_pct", "DRAWDOWN_WEEKLY"),
    "monthly": ("monthly_loss_limit_pct", "DRAWDOWN_MONTHLY"),
    "max": ("max_drawdown_pct", "MAX_DRAWDOWN"),
}
BREAKER_BY_CODE = {code: kind for kind, (_, code) in BREAKERS.items()}
PERIODS = ("daily", "weekly", "monthly")
_STATE_RANK = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2}


def merge(*layers: RiskLimits | None) -> RiskLimits:
    """Field by field, the last layer that sets a field wins."""
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in RiskLimits.__struct_fields__:
            v = getattr(layer, name)
            if v is not None:
                values[name] = v
    return RiskLimits(**values)


def known_profile(cfg: RiskConfig, name: str | None) -> bool:
    return name is None or name in PRESETS or name in cfg.profiles


def resolve(cfg: RiskConfig, profile_id: str, risk_profile: str | None) -> RiskLimits:
    """The limits of a trading profile: ``[risk.limits]``, then its risk profile (a
    preset, or a custom one on top of its base preset), then ``[risk.overrides.<id>]``."""
    name = risk_profile or cfg.default_profile
    named: list[RiskLimits | None] = []
    if name is not None:
        custom: CustomRiskProfile | None = cfg.profiles.get(name)
        if custom is not None:
            named = [PRESETS.get(custom.base) if custom.base else None, custom]
        elif name in PRESETS:
            named = [PRESETS[name]]
        else:  # a profile stored under a name the config no longer has: fail closed
            raise InvalidArgument("risk_profile", f"unknown risk profile {name!r}")
    return merge(cfg.limits, *named, cfg.overrides.get(profile_id))


def limits_map(limits: RiskLimits) -> dict[str, Any]:
    """The limits that are set, for answers."""
    return {n: getattr(limits, n) for n in limits.__struct_fields__
            if getattr(limits, n) is not None}


# -- calendar periods -----------------------------------------------------------------

def period_bounds(kind: str, now: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar day / week (from Monday) / month holding
    `now` in time zone `tz`."""
    d = now.astimezone(tz).date()
    if kind == "daily":
        start, end = d, d + timedelta(days=1)
    elif kind == "weekly":
        start = d - timedelta(days=d.weekday())
        end = start + timedelta(days=7)
    elif kind == "monthly":
        start = d.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"no period {kind!r}")
    return _midnight(start, tz), _midnight(end, tz)


def _midnight(d: date, tz: tzinfo) -> datetime:
    return datetime.combine(d, time(), tzinfo=tz).astimezone(UTC)


# -- breakers ---------------------------------------------------------------------------

class Period(msgspec.Struct, frozen=True):
    start: datetime
    end: datetime
    #: equity at the start of the period (moved by deposits and withdrawals)
    baseline: Decimal


class Trip(msgspec.Struct, frozen=True):
    kind: str
    code: str
    at: datetime
    #: when it resets by itself (the end of its period); None: only by hand
    until: datetime | None
    loss_pct: Decimal
    limit_pct: Decimal
    equity: Decimal
    reference: Decimal


class BreakerState(msgspec.Struct, frozen=True):
    """What the breakers remember; persisted with the ledger's snapshot."""

    hwm: Decimal | None = None
    periods: dict[str, Period] = {}
    trips: dict[str, Trip] = {}

    def shifted(self, amount: Decimal) -> BreakerState:
        """A deposit (or a withdrawal, negative) is not a gain (a loss): move every
        reference by it."""
        if self.hwm is None and not self.periods:
            return self
        return BreakerState(
            None if self.hwm is None else self.hwm + amount,
            {k: msgspec.structs.replace(p, baseline=p.baseline + amount)
             for k, p in self.periods.items()}, self.trips)


def _loss_pct(reference: Decimal, equity: Decimal) -> Decimal:
    """Loss from `reference` to `equity` in percent, exact (compared as is; `shown`
    rounds it for answers)."""
    if reference <= 0:
        return ZERO
    return max(CONTEXT.divide(reference - equity, reference) * HUNDRED, ZERO)


def shown(value: Decimal, places: str = "0.0001") -> Decimal:
    """A percentage or token count as answers show it; beyond the context's precision
    it is shown as is."""
    try:
        return value.quantize(Decimal(places), context=CONTEXT)
    except decimal.InvalidOperation:
        return value


def observe(state: BreakerState, limits: RiskLimits, equity: Decimal, now: datetime,
            tz: tzinfo) -> tuple[BreakerState, list[Trip], list[Trip]]:
    """The breakers at `equity` now: (new state, trips that tripped, trips that reset
    because their period ended). Periods roll over lazily, at the first observation in
    a new period, with the equity then as the new baseline."""
    active = [k for k, (f, _) in BREAKERS.items() if getattr(limits, f) is not None]
    if not active and not state.trips:
        return state, [], []
    periods = dict(state.periods)
    trips = dict(state.trips)
    tripped: list[Trip] = []
    reset: list[Trip] = []
    for kind, trip in list(trips.items()):
        if trip.until is not None and now >= trip.until:
            reset.append(trips.pop(kind))
    hwm = equity if state.hwm is None else max(state.hwm, equity)
    for kind in active:
        field, code = BREAKERS[kind]
        limit = getattr(limits, field)
        if kind == "max":
            reference, until = hwm, None
        else:
            p = periods.get(kind)
            if p is None or not p.start <= now < p.end:
                start, end = period_bounds(kind, now, tz)
                p = periods[kind] = Period(start, end, equity)
            reference, until = p.baseline, p.end
        loss = _loss_pct(reference, equity)
        if kind not in trips and loss >= limit:
            trips[kind] = t = Trip(kind, code, now, until, shown(loss), limit, equity,
                                   reference)
            tripped.append(t)
    new = BreakerState(hwm, periods, trips)
    if new == state:  # unchanged: the same object (storage encodes it once)
        return state, tripped, reset
    return new, tripped, reset


def breaker_figures(state: BreakerState, limits: RiskLimits, equity: Decimal, now: datetime,
                    tz: tzinfo) -> dict[str, tuple[Decimal, Decimal, Trip | None]]:
    """kind -> (loss %, limit %, trip) of every breaker with a limit, as `observe` would
    see it now (without changing anything)."""
    after, _, _ = observe(state, limits, equity, now, tz)
    out = {}
    for kind, (field, _) in BREAKERS.items():
        limit = getattr(limits, field)
        if limit is None:
            trip = after.trips.get(kind)  # tripped under a limit the config has dropped
            if trip is not None:
                out[kind] = (trip.loss_pct, trip.limit_pct, trip)
            continue
        reference = after.hwm if kind == "max" else after.periods[kind].baseline
        out[kind] = (shown(_loss_pct(reference, equity)), limit, after.trips.get(kind))
    return out


# -- the order rate -------------------------------------------------------------------

class RateBucket:
    """A token bucket: `burst` tokens, refilled at `per_min` a minute; an order placed
    takes one. Kept in memory (a restart refills it)."""

    __slots__ = ("at", "tokens")

    def __init__(self) -> None:
        self.tokens: Decimal | None = None
        self.at: datetime | None = None

    def available(self, limits: RiskLimits, now: datetime) -> Decimal:
        burst = Decimal(limits.order_burst or max(1, int(limits.order_rate_per_min)))
        if self.tokens is None or self.at is None:
            return burst
        elapsed = Decimal(str(max((now - self.at).total_seconds(), 0.0)))
        return min(burst, self.tokens + elapsed * limits.order_rate_per_min / 60)

    def take(self, limits: RiskLimits, now: datetime) -> None:
        if limits.order_rate_per_min is not None:
            self.tokens = self.available(limits, now) - 1
            self.at = now


# -- checks -----------------------------------------------------------------------------

class Check(msgspec.Struct, frozen=True):
    """One pre-trade check: its name, the reason code it fails with, and the figures."""

    check: str
    code: str
    ok: bool
    limit: Any
    value: Any
    headroom: Any = None
    #: when a failed check passes by itself (a cooldown, a stop-loss streak lock)
    until: datetime | None = None

    def to_map(self) -> dict[str, Any]:
        out = {"check": self.check, "code": self.code, "ok": self.ok, "limit": self.limit,
               "value": self.value, "headroom": self.headroom}
        if self.until is not None:
            out["until"] = self.until
        return out

    def details(self) -> dict[str, Any]:
        """The details of the denial this failed check gives."""
        out = {"reason": self.code, "limit": self.limit, "value": self.value,
               "check": self.check}
        if self.until is not None:
            out["until"] = self.until
            out["retry_after_s"] = -self.headroom
        return out


class Proposal(msgspec.Struct, frozen=True):
    """A hypothetical entry order, as the checks see it."""

    symbol: str
    side: str
    qty: Decimal
    #: the price it was given (limit price, signal price, or the market's)
    price: Decimal
    sl_price: Decimal | None = None
    #: the market's last price now, if known: an entry is valued at the worse of the two
    #: (a client-chosen price far from the market must not shrink its notional)
    market: Decimal | None = None
    #: whether it would open a position: a scale-in adds to one, and an amend adds size
    #: to an order already counted, so neither takes an open position slot
    new_position: bool = True

    @property
    def prices(self) -> tuple[Decimal, ...]:
        return (self.price,) if self.market is None else (self.price, self.market)

    @property
    def notional(self) -> Decimal:
        return self.qty * max(self.prices)


class Book(msgspec.Struct, frozen=True):
    """What the checks read from the ledger."""

    equity: Decimal
    #: position ids (open positions and entry orders that will open one) per symbol
    open_by_symbol: dict[str, int]
    exposure: Decimal


def effective_state(profile_state: str, global_state: Any,
                    account_state: Any = None) -> tuple[str, str]:
    """(state, scope): the strictest of the profile's own state, its broker account's and
    the global kill switch; on a tie the narrower scope names it."""
    state, scope = profile_state, "profile"
    for other, where in ((account_state, "account"), (global_state, "global")):
        s = getattr(other, "state", "ACTIVE")
        if _STATE_RANK.get(s, 0) > _STATE_RANK.get(state, 0):
            state, scope = s, where
    return state, scope


def is_blocking(state: str) -> bool:
    """Whether a trading state stops new exposure (and cancels working entries)."""
    return _STATE_RANK.get(state, 0) > 0


def _cap(check: str, code: str, limit: Any, value: Any) -> Check:
    return Check(check, code, value <= limit, limit, value, limit - value)


def run_checks(limits: RiskLimits, prop: Proposal, book: Book, *, state: str, scope: str,
               breakers: dict[str, tuple[Decimal, Decimal, Trip | None]],
               bucket_tokens: Decimal | None,
               protections: Iterable[Check] = ()) -> Iterator[Check]:
    """Every check for `prop`, in the order they are applied."""
    code = {"HALTED": "TRADING_HALTED", "REDUCE_ONLY": "REDUCE_ONLY"}.get(state,
                                                                         "TRADING_HALTED")
    yield Check("trading_state", code, state == "ACTIVE", "ACTIVE",
                state if scope == "profile" else f"{state} ({scope})")
    for kind, (loss, limit, trip) in breakers.items():
        # a breaker not tripped by the last observation trips at this one if the loss
        # reached the limit: the ledger observes before it checks
        yield Check(f"drawdown_{kind}", BREAKERS[kind][1], trip is None, limit, loss,
                    limit - loss)
    yield from protections
    allowed, denied = limits.allowed_symbols, limits.denied_symbols
    if allowed is not None or denied:
        ok = (allowed is None or prop.symbol in allowed) and prop.symbol not in (denied or ())
        yield Check("symbol", "SYMBOL_NOT_ALLOWED", ok,
                    {"allowed": allowed, "denied": denied or []}, prop.symbol)
    if bucket_tokens is not None:
        yield Check("order_rate", "ORDER_RATE", bucket_tokens >= 1,
                    limits.order_rate_per_min, shown(bucket_tokens, "0.001"),
                    shown(bucket_tokens - 1, "0.001"))
    notional = prop.notional
    if limits.min_notional is not None:
        yield Check("min_notional", "MIN_NOTIONAL", notional >= limits.min_notional,
                    limits.min_notional, notional, notional - limits.min_notional)
    if limits.max_notional is not None:
        yield _cap("max_notional", "MAX_NOTIONAL", limits.max_notional, notional)
    if limits.max_risk_per_trade_pct is not None:
        if prop.sl_price is None:
            at_risk = notional
        else:  # from the worse of the given price and the market to the stop
            at_risk = prop.qty * max(abs(p - prop.sl_price) for p in prop.prices)
        pct = (CONTEXT.divide(at_risk, book.equity) * HUNDRED if book.equity > 0
               else HUNDRED * 100)
        limit = limits.max_risk_per_trade_pct
        yield Check("max_risk_per_trade", "MAX_RISK_PER_TRADE", pct <= limit, limit,
                    shown(pct), shown(limit - pct))
    exposure_cap = limits.max_exposure
    if limits.max_leverage is not None:
        by_leverage = max(book.equity, ZERO) * limits.max_leverage
        exposure_cap = by_leverage if exposure_cap is None else min(exposure_cap,
                                                                    by_leverage)
    if exposure_cap is not None:
        yield _cap("max_exposure", "MAX_EXPOSURE", exposure_cap, book.exposure + notional)
    if not prop.new_position:
        return
    if limits.max_open_positions is not None:
        yield _cap("max_open_positions", "MAX_OPEN_POSITIONS", limits.max_open_positions,
                   sum(book.open_by_symbol.values()) + 1)
    if limits.max_open_positions_per_symbol is not None:
        yield _cap("max_open_positions_per_symbol", "MAX_OPEN_POSITIONS_PER_SYMBOL",
                   limits.max_open_positions_per_symbol,
                   book.open_by_symbol.get(prop.symbol, 0) + 1)


_NO_LIMITS = RiskLimits()
EMPTY_BOOK = Book(ZERO, {}, ZERO)


class RiskGate:
    """A ledger's risk: its limits, time zone, market prices, the global kill switch,
    and its breaker state and order bucket. The actor attaches one when it loads the
    ledger; a bare `Ledger` has one with no limits."""

    def __init__(self, limits: RiskLimits | None = None, tz: tzinfo = UTC,
                 mark: Callable[[str], Decimal | None] = lambda symbol: None,
                 global_state: Callable[[], Any] = lambda: None,
                 breakers: BreakerState | None = None, *,
                 account_state: Callable[[], Any] = lambda: None,
                 account_room: tuple[Decimal, Callable[[], Any]] | None = None,
                 concentration: tuple[Any, Any] | None = None,
                 bucket: RateBucket | None = None):
        self.limits = limits or RiskLimits()
        self.tz = tz
        self.mark = mark
        self.global_state = global_state
        #: the profile's broker account's trading state (an object with state, reason,
        #: changed_by, or None)
        self.account_state = account_state
        #: the account's gross exposure limit and what its other profiles expose now:
        #: (limit, () -> Decimal), or None when the account has no such limit
        self.account_room = account_room
        self.breakers = breakers or BreakerState()
        #: the order rate bucket (its owner may keep it across reloads of the ledger)
        self.bucket = bucket or RateBucket()
        #: (instruments, allocation config) of the allocation's concentration limits,
        #: which bind entries as they bind quotes; None: none (a bare ledger)
        self.concentration = concentration
        #: (breakers, their JSON) of the last snapshot written (storage's cache)
        self.encoded: tuple[BreakerState, str] | None = None

    @property
    def limits(self) -> RiskLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: RiskLimits) -> None:
        self._limits = limits
        #: no limit at all: an entry needs only the trading state (the fast path)
        self.unlimited = limits == _NO_LIMITS
        #: a breaker limit is set: equity is observed at every entry and fill
        self.has_breakers = any(getattr(limits, f) is not None for f, _ in BREAKERS.values())
        #: a protection is set: the ledger keeps its recent closes
        self.protected = (limits.cooldown_s is not None
                          or limits.sl_streak_count is not None)
        #: some check reads equity, exposure or the open position count
        self.needs_book = self.has_breakers or any(getattr(limits, f) is not None for f in (
            "max_risk_per_trade_pct", "max_leverage", "max_exposure", "max_open_positions",
            "max_open_positions_per_symbol"))

    def effective(self, profile_state: str) -> tuple[str, str]:
        """(state, scope) of a profile in `profile_state`, its account's and the global
        state considered."""
        return effective_state(profile_state, self.global_state(), self.account_state())

    def scope_state(self, scope: str) -> Any:
        """The account's or the global state object (who set it and why), by scope."""
        if scope == "account":
            return self.account_state()
        if scope == "global":
            return self.global_state()
        return None

    def tokens(self, now: datetime) -> Decimal | None:
        if self.limits.order_rate_per_min is None:
            return None
        return self.bucket.available(self.limits, now)


class GlobalState(msgspec.Struct, frozen=True):
    """The global kill switch: the trading state of every profile at once (the stricter
    of it and a profile's own state applies). A broker account's state has the same
    shape (`AccountState`)."""

    state: str = "ACTIVE"
    reason: str = ""
    changed_by: str = ""
    changed_at: datetime | None = None


AccountState = GlobalState
