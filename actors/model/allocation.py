"""The allocation decision: how much a profile may invest in a symbol now, and why.

Plain synchronous code (docs/allocation.md): `decide` takes what was gathered -- the profile's
capital and exposure (`CapitalPicture`, from its ledger actor), the free cash of its
broker account and a liquidity signal (`Externals`) -- and returns a `Decision` whose
every step is written down in `reasoning`.

The formula (constants from `[allocation]`, defaults shown)::

    cash          = allocated + realized_pnl - fees - reserved_for_positions
    confidence < 69            -> reserved_cash_pct = 0.60            (the fallback)
    else  base = 0.70 - score / 100 * (0.70 - 0.20)
               + 0.10 in a risk-off regime
               + clamp(volatility / vol_scale, 0, 0.10)
          reserved_cash_pct = clamp(base, 0.20, 0.85)
    reserved_cash  = cash * reserved_cash_pct
    max_investable = max(0, cash - reserved_cash - reservations - open_orders)  (floored)

then capped, in this order, by the account's free cash (`ACCOUNT_CASH`), the
concentration limits ticker -> sector -> industry -> area (`MAX_TICKER`, ...), the
ledger's `available` (`LEDGER`), and to 0 when the profile may not add exposure
(`TRADING_STATE`); each cap that lowers the figure is named in `limited_by`. The
reserved share is shown with at least two places and no trailing zeros (0.44).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Container, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from capflow.actors.model.money import ZERO, fmt, quant, round_down, round_up
from capflow.actors.model.settings import AllocationConfig, ConfigError

if TYPE_CHECKING:
    from capflow.actors.model.position_book import PositionBook

#: concentration dimensions in the order they apply, with their `limited_by` names
DIMENSIONS = (("ticker", "MAX_TICKER"), ("sector", "MAX_SECTOR"),
              ("industry", "MAX_INDUSTRY"), ("area", "MAX_AREA"))
_HUNDRED = Decimal(100)


class LiquiditySignal(msgspec.Struct, frozen=True, kw_only=True):
    """How liquid / risky the market is: `score` and `confidence` 0..100, `volatility`
    >= 0 (in the provider's unit; `vol_scale` maps it to a share), `risk_regime` a name
    (``OFF`` / ``RISK_OFF`` add to the reserve)."""

    score: Decimal
    risk_regime: str = "NORMAL"
    volatility: Decimal = ZERO
    confidence: Decimal = _HUNDRED
    #: where it came from, and a version that changes with every new reading
    source: str = ""
    version: float = 0.0

    def to_map(self) -> dict[str, Any]:
        return {"score": self.score, "risk_regime": self.risk_regime,
                "volatility": self.volatility, "confidence": self.confidence,
                "source": self.source}


class Instrument(msgspec.Struct, frozen=True):
    ticker: str
    sector: str | None = None
    industry: str | None = None
    area: str | None = None


class Instruments:
    """Instrument metadata (sector, industry, area) by symbol; unknown symbols have
    none, so only their ticker limit applies."""

    def __init__(self, table: Mapping[str, Instrument] | None = None):
        self._table = dict(table or {})

    @classmethod
    def load(cls, cfg: AllocationConfig) -> Instruments:
        table: dict[str, Instrument] = {}
        if cfg.instruments_csv:
            path = Path(cfg.instruments_csv)
            try:
                with path.open(newline="") as f:
                    for row in csv.DictReader(f):
                        sym = (row.get("symbol") or "").strip()
                        if sym:
                            table[sym] = Instrument(sym, *(
                                (row.get(k) or "").strip() or None
                                for k in ("sector", "industry", "area")))
            except FileNotFoundError:
                raise ConfigError(f"[allocation] instruments_csv {path} does not exist"
                                  ) from None
        for sym, meta in cfg.instruments.items():
            table[sym] = Instrument(sym, meta.sector, meta.industry, meta.area)
        return cls(table)

    def get(self, symbol: str) -> Instrument:
        return self._table.get(symbol) or Instrument(symbol)

    def key(self, symbol: str, dimension: str) -> str | None:
        return getattr(self.get(symbol), dimension)


class CapitalPicture(msgspec.Struct, frozen=True, kw_only=True):
    """A profile's capital and exposure at one moment, read by its own actor."""

    profile_id: str
    currency: str
    places: int
    allocated: Decimal
    realized_pnl: Decimal
    fees: Decimal
    held: Decimal
    reserved_for_orders: Decimal
    reserved_for_positions: Decimal
    available: Decimal
    state: str
    #: symbol -> open positions at market value + active BUY orders + active
    #: reservations
    exposure: dict[str, Decimal]

    @property
    def equity(self) -> Decimal:
        """The profile's maximum investment: what the concentration limits divide."""
        return self.allocated + self.realized_pnl - self.fees

    @property
    def cash(self) -> Decimal:
        return self.equity - self.reserved_for_positions


class Externals(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision needs from outside the ledger; None: unknown (with a note why)."""

    account_id: str
    account_cash: Decimal | None
    account_note: str = ""
    #: False when the profile's currency is not the account's: its cash is no cap
    account_applies: bool = True
    liquidity: LiquiditySignal | None = None
    liquidity_note: str = ""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: str
    symbol: str
    currency: str
    max_investable: Decimal
    reserved_cash_pct: Decimal
    reserved_cash: Decimal
    cash: Decimal
    open_orders: Decimal
    reservations: Decimal
    account_id: str
    #: None when the account holds another currency (then it is no cap)
    account_cash: Decimal | None
    ledger_available: Decimal
    concentration: dict[str, dict[str, Any]]
    limited_by: list[str]
    used_fallback: bool
    liquidity: dict[str, Any] | None
    min_order_notional: Decimal
    reasoning: list[str]

    @property
    def too_small(self) -> bool:
        return self.max_investable < self.min_order_notional

    def to_map(self) -> dict[str, Any]:
        return {"profile_id": self.profile_id, "symbol": self.symbol,
                "currency": self.currency, "max_investable": self.max_investable,
                "reserved_cash_pct": self.reserved_cash_pct,
                "reserved_cash": self.reserved_cash,
                "constraints": {"cash": self.cash, "open_orders": self.open_orders,
                                "reservations": self.reservations,
                                "account_cash": self.account_cash,
                                "ledger_available": self.ledger_available},
                "account_id": self.account_id, "concentration": self.concentration,
                "limited_by": self.limited_by, "used_fallback": self.used_fallback,
                "liquidity": self.liquidity, "min_order_notional": self.min_order_notional,
                "reasoning": self.reasoning}


def _tidy(share: Decimal) -> Decimal:
    """A share as people write it: at least two places, no trailing zeros beyond
    (0.4400 -> 0.44, 0.3 -> 0.30, 0.425 -> 0.425)."""
    n = share.normalize()
    return n.quantize(Decimal("0.01")) if n.as_tuple().exponent > -2 else n


def _clamp(x: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    return max(lo, min(hi, x))


def reserved_cash_pct(liq: LiquiditySignal | None, cfg: AllocationConfig,
                      why: list[str] | None = None) -> tuple[Decimal, bool]:
    """The share of cash kept back, and whether it is the fallback."""
    why = [] if why is None else why
    confidence = ZERO if liq is None else liq.confidence
    if confidence < cfg.confidence_min:
        why.append(f"confidence {fmt(confidence)} < {fmt(cfg.confidence_min)}: fallback "
                   f"reserve {fmt(cfg.fallback_reserved_pct)}")
        return cfg.fallback_reserved_pct, True
    lo, hi = cfg.reserved_pct_at_score_100, cfg.reserved_pct_at_score_0
    base = hi - liq.score / _HUNDRED * (hi - lo)
    why.append(f"score {fmt(liq.score)}: base {fmt(hi)} - {fmt(liq.score)}/100 * "
               f"({fmt(hi)} - {fmt(lo)}) = {fmt(base)}")
    if liq.risk_regime.upper() in {r.upper() for r in cfg.risk_off_regimes}:
        base += cfg.risk_off_add
        why.append(f"regime {liq.risk_regime}: +{fmt(cfg.risk_off_add)} = {fmt(base)}")
    vol_add = _clamp(liq.volatility / cfg.vol_scale, ZERO, cfg.vol_add_max)
    if vol_add:
        base += vol_add
        why.append(f"volatility {fmt(liq.volatility)} / {fmt(cfg.vol_scale)} (at most "
                   f"{fmt(cfg.vol_add_max)}): +{fmt(vol_add)} = {fmt(base)}")
    pct = _clamp(base, cfg.reserved_pct_min, cfg.reserved_pct_max)
    if pct != base:
        why.append(f"clamped to [{fmt(cfg.reserved_pct_min)}, "
                   f"{fmt(cfg.reserved_pct_max)}]: {fmt(pct)}")
    return pct, False


def decide(pic: CapitalPicture, symbol: str, ext: Externals, instruments: Instruments,
           cfg: AllocationConfig) -> Decision:
    places = pic.places
    q = quant(places)
    why: list[str] = []
    cash = pic.cash
    why.append(f"cash = allocated {fmt(pic.allocated)} + realized "
               f"{fmt(pic.realized_pnl)} - fees {fmt(pic.fees)} - in positions "
               f"{fmt(pic.reserved_for_positions)} = {fmt(cash)}")
    liq = ext.liquidity
    if liq is None:
        why.append(f"liquidity unknown ({ext.liquidity_note or 'no signal'}): "
                   "confidence 0")
    pct, fallback = reserved_cash_pct(liq, cfg, why)
    pct = _tidy(pct)
    reserved = cash * pct
    raw = cash - reserved - pic.held - pic.reserved_for_orders
    value = round_down(max(ZERO, raw), places)
    why.append(f"max_investable = cash {fmt(cash)} - reserved "
               f"{fmt(round_up(reserved, places))} "
               f"({fmt(pct)}) - reservations {fmt(pic.held)} - open orders "
               f"{fmt(pic.reserved_for_orders)} = {fmt(value)}")
    limited_by: list[str] = []

    def cap(limit: Decimal, name: str, text: str) -> None:
        nonlocal value
        limit = round_down(max(ZERO, limit), places)
        if limit < value:
            value = limit
            limited_by.append(name)
            why.append(f"{text}: capped to {fmt(value)} ({name})")
        else:
            why.append(f"{text}: not binding")

    account_cash = ext.account_cash
    if not ext.account_applies:
        why.append(f"account {ext.account_id} holds another currency than "
                   f"{pic.currency}: its cash is no cap")
    else:
        if account_cash is None:
            why.append(f"account {ext.account_id} cash unknown "
                       f"({ext.account_note or 'no answer'}): 0")
            account_cash = ZERO
        cap(account_cash, "ACCOUNT_CASH",
            f"account {ext.account_id} free cash {fmt(account_cash)}")
    concentration: dict[str, dict[str, Any]] = {}
    equity = pic.equity
    for c in concentration_limits(equity, pic.exposure, symbol, instruments, cfg, places):
        if c.key is None:
            why.append(f"{c.dimension}: not known for {symbol}, no limit")
            continue
        concentration[c.dimension] = {"key": c.key, "limit": c.limit,
                                      "invested": c.invested, "residual": c.residual}
        cap(c.residual, c.code, f"{c.dimension} {c.key}: limit {fmt(c.share)} of equity "
                                f"{fmt(equity)} = {fmt(c.limit)}, invested {fmt(c.invested)}, "
                                f"residual {fmt(c.residual)}")
    cap(pic.available, "LEDGER", f"ledger available {fmt(pic.available)}")
    if pic.state != "ACTIVE":
        cap(ZERO, "TRADING_STATE", f"the profile is {pic.state}: no new exposure")
    if value < cfg.min_order_notional:
        why.append(f"{fmt(value)} is below the minimum order notional "
                   f"{fmt(cfg.min_order_notional)}")
    return Decision(
        profile_id=pic.profile_id, symbol=symbol, currency=pic.currency,
        max_investable=value.quantize(q), reserved_cash_pct=pct,
        reserved_cash=round_up(reserved, places), cash=cash,
        open_orders=pic.reserved_for_orders, reservations=pic.held,
        account_id=ext.account_id, account_cash=account_cash if ext.account_applies
        else None,
        ledger_available=pic.available, concentration=concentration,
        limited_by=limited_by, used_fallback=fallback,
        liquidity=None if liq is None else liq.to_map(),
        min_order_notional=cfg.min_order_notional, reasoning=why)


class ConcentrationLimit(msgspec.Struct, frozen=True):
    """One concentration dimension of a symbol: its key (None: the symbol has none, no
    limit), the share of equity it may take, that limit, and what is invested in it."""

    dimension: str
    code: str
    key: str | None
    share: Decimal
    limit: Decimal
    invested: Decimal

    @property
    def residual(self) -> Decimal:
        return self.limit - self.invested if self.limit > self.invested else self.limit * 0


def concentration_limits(equity: Decimal, exposure: Mapping[str, Decimal], symbol: str,
                         instruments: Instruments, cfg: AllocationConfig,
                         places: int) -> list[ConcentrationLimit]:
    """The concentration limits of `symbol`, ticker -> sector -> industry -> area, each at
    its share of `equity` (rounded down) against what `exposure` has invested in the same
    key (rounded up). A quote caps by these (`decide`); an entry order is refused past
    them (the ledger's checks), so both speak of the same figures."""
    out = []
    for dim, code in DIMENSIONS:
        share = getattr(cfg, f"max_{dim}")
        key = instruments.key(symbol, dim)
        if key is None:
            out.append(ConcentrationLimit(dim, code, None, share, ZERO, ZERO))
            continue
        limit = round_down(max(ZERO, equity) * share, places)
        invested = sum((v for s, v in exposure.items() if instruments.key(s, dim) == key),
                       ZERO)
        out.append(ConcentrationLimit(dim, code, key, share, limit,
                                      round_up(invested, places)))
    return out


def exposure_by_symbol(positions: PositionBook, orders, held_by_symbol: Mapping[str, Decimal],
                       mark: Callable[[str], Decimal | None],
                       symbols: Container[str] | None = None) -> dict[str, Decimal]:
    """Open positions at market value (entry price when there is no mark), plus what
    working entry orders (either side) and active reservations hold, per symbol; only
    `symbols` when given. The positions' part comes from the book's sums per symbol, so
    it costs one product per symbol, not one per position."""
    out: dict[str, Decimal] = {s: v for s, v in held_by_symbol.items()
                               if symbols is None or s in symbols}
    for s in positions.symbols():
        if symbols is None or s in symbols:
            out[s] = out.get(s, ZERO) + positions.value(s, mark(s))
    for o in orders:
        if symbols is None or o.symbol in symbols:
            out[o.symbol] = out.get(o.symbol, ZERO) + o.reserved
    return out
