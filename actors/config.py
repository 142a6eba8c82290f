"""One typed, frozen configuration, loaded once from a TOML file and `CAPFLOW_*` variables.

Precedence: defaults < TOML file < environment. A variable names its place with double
underscores: ``CAPFLOW_STORAGE__URL=postgresql+psycopg://...`` sets ``[storage] url``;
values are read as TOML values when they parse (numbers, booleans, arrays), else as text.
The defaults run out of the box: SQLite under ``./data/``. The names bots already use
(`ENV_ALIASES`: ``OMS_ENABLED``, ``MAX_OPEN_POSITIONS``, ...) are read too, below the
``CAPFLOW_*`` variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

ENV_PREFIX = "CAPFLOW_"
#: environment names bots already use, read as these settings (a ``CAPFLOW_*`` variable
#: for the same setting wins)
ENV_ALIASES = {
    "OMS_ENABLED": ("oms", "enabled"),
    "MAX_OPEN_POSITIONS": ("risk", "limits", "max_open_positions"),
    "MAX_OPEN_POSITIONS_PER_SYMBOL": ("risk", "limits", "max_open_positions_per_symbol"),
    "MAX_SIZE_PER_POSITION_USDT": ("risk", "limits", "max_notional"),
}


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: SQLAlchemy URL. SQLite (WAL, synchronous=FULL) by default; PostgreSQL with
    #: ``postgresql+psycopg://user:pass@host/db``.
    url: str = "sqlite:///data/capflow.db"
    #: false: writes are not persisted at all (benchmarks, throwaway embedding).
    durable: bool = True
    #: most write requests grouped into one transaction
    max_batch: int = 256
    #: "process": the SQL runs in a child process that owns the database (the fast
    #: default: it does not compete with the actors for the interpreter lock);
    #: "thread": in a thread of this process
    writer: Literal["process", "thread"] = "process"
    #: SQLite only. "FULL": a commit is on disk before it is acknowledged (survives a
    #: power loss). "NORMAL": survives a crash of the process (also SIGKILL) but not of
    #: the machine, and commits several times faster. PostgreSQL: see its own
    #: synchronous_commit.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"


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


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: str = "INFO"
    #: JSON lines instead of human-readable lines
    json: bool = False
    #: also write to this file (rotated at 50 MB)
    file: str | None = None


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: the ROUTER socket bots connect to (REQ or DEALER)
    endpoint: str = "tcp://127.0.0.1:7100"
    #: the PUB socket of the event stream
    events_endpoint: str = "tcp://127.0.0.1:7101"
    #: larger frames are refused by the socket (ZMQ_MAXMSGSIZE), never buffered
    max_request_bytes: int = 1 << 20
    #: a request not finished in this time is answered TIMEOUT (the outcome is unknown:
    #: the client retries with the same id and gets the real answer)
    request_timeout_s: float = 10.0
    #: answers kept for repeated request ids (per client), at least this long (the
    #: contract promises at least 10 minutes), within the budgets below
    dedup_ttl_s: Annotated[float, msgspec.Meta(ge=600)] = 600.0
    #: at most this many answers (the oldest go first past it)
    dedup_max: Annotated[int, msgspec.Meta(ge=1)] = 500_000
    #: and at most this many bytes of answers in all (the oldest go first past it): the
    #: 10-minute promise holds within this budget
    dedup_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 64 << 20
    #: one client's share of those bytes (past it, that client's oldest go first), so
    #: that one client cannot push out everyone else's answers
    dedup_client_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 16)] = 16 << 20
    #: requests per second per client (token bucket, burst = 2 s worth); 0 = no limit
    rate_limit_per_s: float = 0.0
    #: on SIGTERM / SIGINT, how long in-flight requests may take to finish
    drain_timeout_s: float = 10.0
    #: threads for the few ops that do blocking work (profile.create, profile.list)
    workers: int = 2
    #: the socket thread stamps a heartbeat every turn of its loop (at least 5 times a
    #: second); dead, or no turn for this long: the gateway has failed (`capflow serve`
    #: stops with exit status 1)
    watchdog_stall_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: CURVE only: ZMTP heartbeats on the sockets, so that connections of peers that
    #: vanished are closed after `heartbeat_timeout_s` (0: off)
    heartbeat_ivl_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=6553)] = 15.0

    def __post_init__(self) -> None:
        if self.dedup_client_max_bytes > self.dedup_max_bytes:
            raise ValueError("[server] dedup_client_max_bytes is above dedup_max_bytes")
        if self.heartbeat_ivl_s > 0 and self.heartbeat_timeout_s < self.heartbeat_ivl_s:
            raise ValueError("[server] heartbeat_timeout_s is below heartbeat_ivl_s")


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: CURVE encryption and authentication of clients (see `capflow keys generate`)
    curve: bool = False
    #: holds server.key_secret and clients.toml (client public keys -> their profiles)
    keys_dir: str = "keys"


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


class ConnectConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Reconnection: exponential backoff with jitter, then give up."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    #: each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]
    jitter: float = 0.2


class AccountConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One broker account, served by one account manager hosting one adapter."""

    #: "module:Class" of the adapter (a `capflow.brokers.base.BrokerAdapter`)
    adapter: str = "capflow.brokers.paper:PaperBroker"
    currency: str = "USDT"
    #: the account's cash at the start (paper)
    initial_cash: Decimal = Decimal("1000000")
    #: capflow symbol -> the broker's symbol, where they differ
    symbols: dict[str, str] = msgspec.field(default_factory=dict)
    connect: ConnectConfig = msgspec.field(default_factory=ConnectConfig)
    #: adapter-specific settings (the paper broker: taker_fee, maker_fee, slippage_bps)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)


def _default_accounts() -> dict[str, AccountConfig]:
    return {"paper": AccountConfig()}


class BrokerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: account of a profile created without one
    default_account: str = "paper"
    accounts: dict[str, AccountConfig] = msgspec.field(default_factory=_default_accounts)


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

    def __post_init__(self) -> None:
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
        from capflow.actors.risk import PRESETS, load_timezone

        load_timezone(self.timezone)
        for name, custom in self.profiles.items():
            if custom.base is not None and custom.base not in PRESETS:
                raise ValueError(f"[risk.profiles.{name}] base {custom.base!r} is not a "
                                 f"preset ({', '.join(PRESETS)})")
        if (self.default_profile is not None and self.default_profile not in PRESETS
                and self.default_profile not in self.profiles):
            raise ValueError(f"[risk] default_profile {self.default_profile!r} is neither "
                             "a preset nor in [risk.profiles]")


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    environment: str = "paper"
    #: pin the process to these CPUs (hand-offs between threads are cheaper on one)
    cpu_affinity: list[int] | None = None
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    brokers: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    oms: OmsConfig = msgspec.field(default_factory=OmsConfig)
    allocation: AllocationConfig = msgspec.field(default_factory=AllocationConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)

    def places(self, currency: str) -> int:
        try:
            return self.ledger.currency_places[currency]
        except KeyError:
            raise ConfigError(f"currency {currency!r} has no entry in "
                              "[ledger] currency_places") from None


def _env_value(text: str) -> Any:
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    # a decimal stays text: the typed conversion reads it exactly (a float would round
    # an amount), and still makes a float of it where the setting is one
    return text.strip() if isinstance(value, float) else value


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = base.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a section")
        base = node
    base[path[-1]] = value


def load_config(path: str | Path | None = None,
                env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Load the configuration: `path` (or ``$CAPFLOW_CONFIG``, or ``./capflow.toml`` if it
    exists), then ``CAPFLOW_*`` variables, then keyword `overrides` (section dicts)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = path or env.get("CAPFLOW_CONFIG") or (
        "capflow.toml" if Path("capflow.toml").exists() else None)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for name, place in ENV_ALIASES.items():
        if name in env:
            _merge(data, list(place), _env_value(env[name]))
    for name, text in env.items():
        if name.startswith(ENV_PREFIX) and name != "CAPFLOW_CONFIG":
            keys = name[len(ENV_PREFIX):].lower().split("__")
            _merge(data, keys, _env_value(text))
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
