"""The domain's settings: the ledger, the market simulator, the OMS, the
allocation formula. Each is a frozen, typed section of the one configuration
(`capflow.actors.config.Config`), validated where it is defined."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class LedgerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: most ledger actors alive at once; the least recently used is passivated
    max_live: int = 1024
    #: a ledger actor idle this long is passivated (its state is in storage)
    idle_s: float = 300.0
    #: reservation time-to-live when a request names none
    default_ttl_s: int = 300
    #: currency of a profile created without one
    default_currency: str = "USDT"
    #: decimal places per currency; amounts with more places are refused, not rounded
    currency_places: dict[str, int] = msgspec.field(default_factory=lambda: {
        "USD": 2, "USDT": 2, "USDC": 2, "EUR": 2, "BTC": 8, "ETH": 8})
    #: how long an embedded call waits for its answer
    call_timeout_s: float = 10.0


class SymbolConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One simulated instrument: a geometric Brownian motion around `price`."""

    #: start price (quote currency per unit)
    price: Decimal
    #: annualized drift and volatility of the log price (0.6 = 60 % a year)
    drift: float = 0.0
    volatility: float = 0.6
    #: bid-ask spread in basis points of the mid price
    spread_bps: float = 2.0
    #: decimal places of prices, and of quantities
    price_places: int = 2
    qty_places: int = 6
    #: quantity available per tick on each side (larger orders fill over several ticks)
    liquidity: Decimal = Decimal("1000")


def _default_symbols() -> dict[str, SymbolConfig]:
    return {
        "BTCUSDT": SymbolConfig(Decimal("65000"), volatility=0.55, price_places=2,
                                qty_places=6, liquidity=Decimal("5")),
        "ETHUSDT": SymbolConfig(Decimal("3200"), volatility=0.7, price_places=2,
                                qty_places=5, liquidity=Decimal("80")),
        "SOLUSDT": SymbolConfig(Decimal("150"), volatility=0.9, price_places=3,
                                qty_places=3, liquidity=Decimal("2000")),
    }


class SimulatorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: "realtime": a tick every `tick_interval_s`; "step": only when advanced
    #: (`System.advance(n)`), for deterministic tests and fast backtest-like runs
    mode: Literal["realtime", "step"] = "realtime"
    tick_interval_s: float = 1.0
    #: simulated seconds between two ticks (default: `tick_interval_s`)
    dt_s: float | None = None
    #: the same seed and config replay the same prices
    seed: int = 42
    #: replay this CSV of ticks or OHLCV bars instead of simulating (see the README)
    replay: str | None = None
    symbols: dict[str, SymbolConfig] = msgspec.field(default_factory=_default_symbols)
    #: a symbol first seen in an accepted order starts at the order's price with these
    new_symbol_volatility: float = 0.8
    new_symbol_liquidity: Decimal = Decimal("1000000")
    #: whether an order may name a symbol the simulator does not know (it then starts
    #: simulating it); false: such entries are refused with UNKNOWN_SYMBOL
    new_symbols: bool = True
    #: most symbols simulated at once, configured ones included; an entry that would need
    #: one more is refused with UNKNOWN_SYMBOL
    max_symbols: Annotated[int, msgspec.Meta(ge=1)] = 256


class OmsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: false: signals are received and audited, nothing is traded
    enabled: bool = True
    #: take-profit / stop-loss distance in percent of the entry price when a signal
    #: names none
    tp_pct: Decimal = Decimal("2")
    sl_pct: Decimal = Decimal("1")
    #: a signal without qty or notional risks this percent of equity at its stop
    risk_per_trade_pct: Decimal = Decimal("1")
    #: a market order reserves its notional at the signal price plus this percent
    #: (slippage room) plus the taker fee
    reserve_buffer_pct: Decimal = Decimal("1")
    #: append-only JSON lines audit of every signal, rotated by size
    audit_log: str = "data/signals.jsonl"
    audit_max_bytes: int = 50 << 20
    audit_backups: int = 10
    #: the event stream carries at most one move of a position's trailing stop per
    #: this many seconds (every move is stored; the last before a close always goes out)
    trail_event_interval_s: float = 1.0


class InstrumentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the concentration limits group a symbol by."""

    sector: str | None = None
    industry: str | None = None
    area: str | None = None


class LiquidityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the liquidity / risk-regime signal of `allocation.quote` comes from."""

    #: "static" (the values below), "file" (a JSON file, re-read when it changes),
    #: "push" (set with the `liquidity.set` op), or "module:Class" of a
    #: `actors.liquidity.LiquidityProvider`
    provider: str = "static"
    #: static: the signal; no score means liquidity is unknown (confidence 0: the
    #: fallback reserve applies)
    score: Decimal | None = None
    risk_regime: str = "NORMAL"
    volatility: Decimal = Decimal("0")
    confidence: Decimal = Decimal("100")
    #: file: the JSON file (see the README)
    file: str = "data/liquidity.json"
    #: exponential smoothing of the score, 0 < alpha <= 1 (none: off)
    ema_alpha: Decimal | None = None
    #: a new risk regime counts only once it is read this many times in a row
    regime_hysteresis: Annotated[int, msgspec.Meta(ge=1)] = 1


class AllocationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The decision formula of `allocation.quote` (see the README for the formula)."""

    #: how long a quote waits for each thing it gathers
    account_timeout_s: float = 5.0
    exposure_timeout_s: float = 5.0
    liquidity_timeout_s: float = 5.0
    #: below this confidence the liquidity signal is not trusted: the fallback applies
    confidence_min: Decimal = Decimal("69")
    fallback_reserved_pct: Decimal = Decimal("0.60")
    #: the reserved cash share runs linearly from this at score 0 to the next at 100
    reserved_pct_at_score_0: Decimal = Decimal("0.70")
    reserved_pct_at_score_100: Decimal = Decimal("0.20")
    #: added in these regimes
    risk_off_add: Decimal = Decimal("0.10")
    risk_off_regimes: list[str] = msgspec.field(default_factory=lambda: ["OFF", "RISK_OFF"])
    #: volatility / vol_scale is added, at most vol_add_max
    vol_scale: Decimal = Decimal("100")
    vol_add_max: Decimal = Decimal("0.10")
    reserved_pct_min: Decimal = Decimal("0.20")
    reserved_pct_max: Decimal = Decimal("0.85")
    #: a quote below this is INSUFFICIENT_CAPITAL
    min_order_notional: Decimal = Decimal("50")
    #: concentration limits, fractions of the profile's equity, applied in this order
    max_ticker: Decimal = Decimal("0.10")
    max_sector: Decimal = Decimal("0.40")
    max_industry: Decimal = Decimal("0.30")
    max_area: Decimal = Decimal("0.50")
    #: instrument metadata: a CSV (symbol,sector,industry,area) and/or entries here
    instruments_csv: str | None = None
    instruments: dict[str, InstrumentConfig] = msgspec.field(default_factory=dict)
    liquidity: LiquidityConfig = msgspec.field(default_factory=LiquidityConfig)

    def __post_init__(self) -> None:
        if min(self.account_timeout_s, self.exposure_timeout_s,
               self.liquidity_timeout_s) <= 0:
            raise ValueError("[allocation] timeouts must be greater than 0")
        if self.vol_scale <= 0:
            raise ValueError("[allocation] vol_scale must be greater than 0")
        shares = ("fallback_reserved_pct", "reserved_pct_at_score_0",
                  "reserved_pct_at_score_100", "risk_off_add", "vol_add_max",
                  "reserved_pct_min", "reserved_pct_max", "max_ticker", "max_sector",
                  "max_industry", "max_area")
        for name in shares:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"[allocation] {name} must be a share in 0..1")
        if self.reserved_pct_min > self.reserved_pct_max:
            raise ValueError("[allocation] reserved_pct_min is above reserved_pct_max")
        if self.min_order_notional < 0:
            raise ValueError("[allocation] min_order_notional must not be negative")
