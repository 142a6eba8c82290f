"""Liquidity providers: where the liquidity / risk-regime signal of a quote comes from.

A provider answers `get(symbol)` with a `LiquiditySignal`, or None when it knows
nothing (the quote then uses its fallback reserve). Three come with capflow:

- `StaticLiquidity`: fixed values from ``[allocation.liquidity]``;
- `FileLiquidity`: a JSON file, re-read whenever it changes::

      {"score": 72, "risk_regime": "NORMAL", "volatility": 18.5, "confidence": 80,
       "symbols": {"BTCUSDT": {"score": 40, "confidence": 90}}}

  (the top level is the default, ``symbols`` overrides per symbol);
- `PushLiquidity`: set from outside with the ``liquidity.set`` op.

Another provider is named ``"module:Class"``: a `LiquidityProvider` subclass built
with the `LiquidityConfig`. Its `get` may block (it may call a service): a quote runs it
on a worker thread and stops waiting after ``liquidity_timeout_s``. The built-in ones
answer from memory and run inline (``blocking = False``).

`Smoothed` wraps any provider with an EMA of the score and hysteresis on the regime.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from decimal import Decimal
from typing import Any

from loguru import logger

from capflow.actors.model.allocation import LiquiditySignal
from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.settings import ConfigError, LiquidityConfig
from capflow.brokers.modules import current_module

ALL = "*"


def parse_signal(raw: dict[str, Any], *, source: str, version: float = 0.0,
                 base: LiquiditySignal | None = None) -> LiquiditySignal:
    """A signal from a map (a file, an op); missing fields come from `base`."""
    def num(field: str, default: Decimal | None, hi: int | None) -> Decimal:
        value = raw.get(field)
        if value is None:
            if default is None:
                raise InvalidArgument(field, f"{field} is required")
            return default
        d = parse_decimal(value, field, allow_zero=True)
        if hi is not None and d > hi:
            raise InvalidArgument(field, f"{field} must be in 0..{hi}")
        return d

    regime = raw.get("risk_regime", base.risk_regime if base else "NORMAL")
    if not isinstance(regime, str) or not 1 <= len(regime) <= 32:
        raise InvalidArgument("risk_regime", "risk_regime must be a name of 1..32 "
                                             "characters")
    return LiquiditySignal(
        score=num("score", base.score if base else None, 100),
        risk_regime=regime.upper(),
        volatility=num("volatility", base.volatility if base else Decimal(0), None),
        confidence=num("confidence", base.confidence if base else Decimal(100), 100),
        source=source, version=version)


class LiquidityProvider(ABC):
    """The interface. `get` may block unless `blocking` is False."""

    blocking = True

    def __init__(self, config: LiquidityConfig):
        self.config = config

    @abstractmethod
    def get(self, symbol: str) -> LiquiditySignal | None:
        """The signal for `symbol` now, or None when nothing is known."""

    def close(self) -> None:  # noqa: B027 -- optional: most providers hold nothing
        """Release what the provider holds (files, connections); nothing by default."""


class StaticLiquidity(LiquidityProvider):
    blocking = False

    def __init__(self, config: LiquidityConfig):
        super().__init__(config)
        self._signal = None if config.score is None else parse_signal(
            {"score": config.score, "risk_regime": config.risk_regime,
             "volatility": config.volatility, "confidence": config.confidence},
            source="static")

    def get(self, symbol: str) -> LiquiditySignal | None:
        return self._signal


class FileLiquidity(LiquidityProvider):
    """Reads the file again when its modification time or size changes; a file that
    does not parse keeps the last good reading (and is logged)."""

    blocking = False

    def __init__(self, config: LiquidityConfig):
        super().__init__(config)
        self.path = config.file
        self._stamp: tuple[int, int] | None = None
        self._default: LiquiditySignal | None = None
        self._symbols: dict[str, LiquiditySignal] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        version = st.st_mtime_ns / 1e9
        try:
            with open(self.path) as f:
                data = json.load(f)
            default = parse_signal(data, source="file", version=version) \
                if "score" in data else None
            symbols = {s: parse_signal(v, source="file", version=version, base=default)
                       for s, v in (data.get("symbols") or {}).items()}
        except Exception as exc:
            logger.warning("liquidity file {} not used: {}", self.path, exc)
            return
        self._default, self._symbols = default, symbols

    def get(self, symbol: str) -> LiquiditySignal | None:
        self._refresh()
        return self._symbols.get(symbol) or self._default


#: most symbols with a state of their own: a pushed signal (`PushLiquidity`), a smoothed
#: one (`Smoothed`)
MAX_STATES = 10_000


class PushLiquidity(LiquidityProvider):
    """Signals set from outside (`liquidity.set`), per symbol or for all (``*``). At most
    `MAX_STATES` symbols keep a signal of their own: past that, the symbol pushed least
    recently loses its own and falls back to ``*`` (a client may name any symbol)."""

    blocking = False

    def __init__(self, config: LiquidityConfig):
        super().__init__(config)
        self._signals: OrderedDict[str, LiquiditySignal] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, symbol: str, raw: dict[str, Any]) -> LiquiditySignal:
        sig = parse_signal(raw, source="push", version=time.monotonic())
        with self._lock:  # readers use plain gets, atomic as single dict reads
            self._signals[symbol] = sig
            self._signals.move_to_end(symbol)
            while len(self._signals) > MAX_STATES + (ALL in self._signals):
                oldest = next(k for k in self._signals if k != ALL)
                del self._signals[oldest]
        return sig

    def get(self, symbol: str) -> LiquiditySignal | None:
        return self._signals.get(symbol) or self._signals.get(ALL)


class Smoothed(LiquidityProvider):
    """An EMA of the score (``ema_alpha``) and hysteresis on the regime (a new regime
    counts once read ``regime_hysteresis`` times in a row), per symbol, updated once per
    new reading of the wrapped provider."""

    def __init__(self, inner: LiquidityProvider, config: LiquidityConfig):
        super().__init__(config)
        self.inner = inner
        self.blocking = inner.blocking
        self.alpha = config.ema_alpha
        if self.alpha is not None and not Decimal(0) < self.alpha <= 1:
            raise ConfigError("[allocation.liquidity] ema_alpha must be in (0, 1]")
        self.need = config.regime_hysteresis
        self._lock = threading.Lock()
        # symbol -> (raw version, smoothed signal, candidate regime, times in a row), the
        # least recently read first: a quote may name any symbol, so at most MAX_STATES
        # are kept (a symbol read again after it was dropped starts afresh)
        self._state: OrderedDict[str, tuple[float, LiquiditySignal, str, int]] = (
            OrderedDict())

    def get(self, symbol: str) -> LiquiditySignal | None:
        raw = self.inner.get(symbol)
        if raw is None:
            return None
        with self._lock:
            st = self._state.get(symbol)
            if st is not None:
                self._state.move_to_end(symbol)
                if st[0] == raw.version:
                    return st[1]
            if st is None:
                out, cand, n = raw, raw.risk_regime, self.need
            else:
                prev = st[1]
                score = raw.score if self.alpha is None else (
                    self.alpha * raw.score + (1 - self.alpha) * prev.score)
                cand, n = raw.risk_regime, (st[3] + 1 if raw.risk_regime == st[2] else 1)
                regime = raw.risk_regime if n >= self.need else prev.risk_regime
                out = LiquiditySignal(score=score, risk_regime=regime,
                                      volatility=raw.volatility, confidence=raw.confidence,
                                      source=raw.source, version=raw.version)
            self._state[symbol] = (raw.version, out, cand, n)
            if len(self._state) > MAX_STATES:
                self._state.popitem(last=False)
            return out

    def close(self) -> None:
        self.inner.close()


_BUILT_IN = {"static": StaticLiquidity, "file": FileLiquidity, "push": PushLiquidity}


def load_provider(config: LiquidityConfig) -> LiquidityProvider:
    name = config.provider
    cls = _BUILT_IN.get(name)
    if cls is None:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigError(f"[allocation.liquidity] provider {name!r}: use static, file, "
                              "push or 'module:Class'")
        try:
            cls = getattr(importlib.import_module(current_module(module)), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"[allocation.liquidity] provider {name!r} cannot be "
                              f"loaded: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, LiquidityProvider)):
            raise ConfigError(f"[allocation.liquidity] provider {name!r} is not a "
                              "LiquidityProvider")
    provider = cls(config)
    if config.ema_alpha is not None or config.regime_hysteresis > 1:
        return Smoothed(provider, config)
    return provider


def unwrap(provider: LiquidityProvider) -> LiquidityProvider:
    while isinstance(provider, Smoothed):
        provider = provider.inner
    return provider
