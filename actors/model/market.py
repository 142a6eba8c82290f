"""The simulated market, pure and synchronous (`MarketSimulator`).

Every simulated symbol follows its own geometric Brownian motion on the mid price, driven
by its own random stream seeded from (global seed, symbol name): the same seed and config
give the same ticks, and adding a symbol never changes the prices of the others. The mid
is a float internally and becomes a `Decimal` only when a `Tick` is built: bid rounded
down, ask rounded up, last rounded half-even, all to the symbol's price places, bid at
least one price step below ask.

With ``replay`` set, ticks come from a CSV file of ticks or OHLCV bars instead
(`capflow.actors.model.replay.CsvReplay`); symbols the file does not contain may still be
simulated alongside (`MarketSimulator.ensure_symbol`). Its actor is
`capflow.actors.simulator.MarketSimulatorActor`.
"""

from __future__ import annotations

import math
import random
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter

from msgspec.structs import replace

from capflow.actors.model.money import round_half_even
from capflow.actors.model.replay import CsvReplay
from capflow.actors.model.settings import SimulatorConfig, SymbolConfig
from capflow.actors.model.ticks import (
    NEW_SYMBOL_QTY_PLACES,
    NEW_SYMBOL_SPREAD_BPS,
    Quoter,
    Tick,
    check_spec,
    new_price_places,
    to_decimal,
)

#: simulated markets trade around the clock: a year is 365 days of seconds
SECONDS_PER_YEAR = 365 * 24 * 3600


#: the float mid is kept inside these bounds so a Tick can always be built
_MIN_MID = 1e-12


_MAX_MID = 1e14


def _stream_seed(seed: int, symbol: str) -> int:
    """A seed per (seed, symbol) that is the same in every process (no `hash()`)."""
    return ((seed & 0xFFFF_FFFF_FFFF_FFFF) << 32) | zlib.crc32(symbol.encode("utf-8"))


class GbmProcess:
    """Geometric Brownian motion of one symbol's mid price, with its own random stream.

    ``mid' = mid * exp((drift - vol**2 / 2) * dt + vol * sqrt(dt) * Z)``, Z standard normal,
    dt in years. One normal draw per step whatever the parameters, so the stream stays
    aligned when only drift or volatility change.
    """

    def __init__(self, mid: float, drift: float, volatility: float, *, seed: int,
                 symbol: str):
        mid = float(mid)
        if not (math.isfinite(mid) and mid > 0):
            raise ValueError(f"{symbol}: the start mid must be a positive number")
        if not (math.isfinite(drift) and math.isfinite(volatility)) or volatility < 0:
            raise ValueError(f"{symbol}: drift must be finite, volatility finite and >= 0")
        self.symbol = symbol
        self.mid = mid
        self.drift = float(drift)
        self.volatility = float(volatility)
        self._rng = random.Random(_stream_seed(seed, symbol))

    def next_mid(self, dt_years: float) -> float:
        if not (math.isfinite(dt_years) and dt_years >= 0):
            raise ValueError(f"dt_years must be a finite number >= 0, not {dt_years!r}")
        z = self._rng.gauss(0.0, 1.0)
        vol = self.volatility
        growth = math.exp((self.drift - 0.5 * vol * vol) * dt_years
                          + vol * math.sqrt(dt_years) * z)
        self.mid = min(max(self.mid * growth, _MIN_MID), _MAX_MID)
        return self.mid


class _Instrument:
    __slots__ = ("last", "price", "process", "quoter", "seq", "spec")

    def __init__(self, spec: SymbolConfig, process: GbmProcess | None):
        self.spec = spec
        self.process = process
        self.price = spec.price
        self.quoter = Quoter(spec)
        self.seq = 0
        self.last: Tick | None = None


class MarketSimulator:
    """The simulated market: pure, synchronous, not thread-safe.

    `step()` moves simulated time by ``dt_s`` (or, replaying, to the next timestamp of
    the file) and returns one tick per simulated symbol, the first one of a symbol at its
    start price exactly; symbols come in sorted order.
    """

    def __init__(self, config: SimulatorConfig, start: datetime):
        if start.tzinfo is None:
            raise ValueError("start must be a timezone-aware datetime")
        dt_s = config.tick_interval_s if config.dt_s is None else config.dt_s
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"simulator dt_s must be greater than zero, not {dt_s!r}")
        for symbol, spec in config.symbols.items():
            check_spec(symbol, spec)
        self.config = config
        self.dt_s = float(dt_s)
        #: simulated time of the last step (`start` before the first)
        self.now = start.astimezone(UTC)
        self._base = self.now
        self._steps_since_base = 0
        self._instruments: dict[str, _Instrument] = {}
        self._simulated: list[str] = []  # sorted
        #: symbols whose replay data took over from their simulation since the caller
        #: last emptied this list
        self.taken_over: list[str] = []
        self._replay = CsvReplay(config.replay, config) if config.replay else None
        if self._replay is None:
            for symbol, spec in config.symbols.items():
                self._add_simulated(symbol, spec)

    @property
    def exhausted(self) -> bool:
        """Replaying: True once the file is used up. Always False without replay."""
        return self._replay is not None and self._replay.exhausted

    def symbols(self) -> list[str]:
        return sorted(self._instruments)

    def last(self, symbol: str) -> Tick | None:
        inst = self._instruments.get(symbol)
        return None if inst is None else inst.last

    def spec(self, symbol: str) -> SymbolConfig | None:
        """The parameters `symbol` is quoted with (places, spread, liquidity), if known."""
        inst = self._instruments.get(symbol)
        return None if inst is None else inst.spec

    def ensure_symbol(self, symbol: str, price: Decimal) -> bool:
        """Start simulating `symbol` at `price` unless it is known; True if it was new.

        A new symbol gets drift 0, ``new_symbol_volatility``, a 2 bps spread, the price
        places `price` needs (2 to 8), 6 quantity places and ``new_symbol_liquidity``.
        Replaying, a symbol of the config that the file has not shown yet is simulated
        with its configured parameters, starting at `price`; if the file shows it later,
        the file takes over.
        """
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol must be a non-empty string, not {symbol!r}")
        price = to_decimal(price, "price")
        if price <= 0:
            raise ValueError(f"price must be greater than zero, not {price}")
        if symbol in self._instruments:
            return False
        configured = self.config.symbols.get(symbol) if self._replay is not None else None
        if configured is not None:
            spec = replace(configured, price=price)
        else:
            places = new_price_places(price)
            start = round_half_even(price, places)
            if start <= 0:
                raise ValueError(f"price {price} is below one step of {places} places")
            spec = SymbolConfig(price=start, drift=0.0,
                                volatility=self.config.new_symbol_volatility,
                                spread_bps=NEW_SYMBOL_SPREAD_BPS, price_places=places,
                                qty_places=NEW_SYMBOL_QTY_PLACES,
                                liquidity=self.config.new_symbol_liquidity)
        check_spec(symbol, spec)
        self._add_simulated(symbol, spec)
        return True

    def opening_quotes(self) -> list[Tick]:
        """A quote at its configured price (seq 0) of each simulated symbol not yet ticked.

        What the market answers before its first step: a price the config names, not
        nothing. The first step still ticks at that price with seq 1.
        """
        return [inst.quoter.tick(symbol, 0, self.now, inst.price)
                for symbol in self._simulated
                if (inst := self._instruments[symbol]).last is None]

    def step(self) -> list[Tick]:
        ticks: list[Tick] = []
        group = self._replay.step() if self._replay is not None else []
        if group:
            self.now = self._base = group[0].ts
            self._steps_since_base = 0
            ticks.extend(self._replayed(tick) for tick in group)
        else:
            self._steps_since_base += 1
            self.now = self._base + timedelta(seconds=self.dt_s * self._steps_since_base)
        ticks.extend(self._simulate(self._instruments[s]) for s in self._simulated)
        if group:
            ticks.sort(key=attrgetter("symbol"))  # stable: a symbol's ticks keep their order
        return ticks

    def close(self) -> None:
        if self._replay is not None:
            self._replay.close()

    # -- internals --

    def _add_simulated(self, symbol: str, spec: SymbolConfig) -> None:
        process = GbmProcess(float(spec.price), spec.drift, spec.volatility,
                             seed=self.config.seed, symbol=symbol)
        self._instruments[symbol] = _Instrument(spec, process)
        self._simulated = sorted({*self._simulated, symbol})

    def _simulate(self, inst: _Instrument) -> Tick:
        assert inst.process is not None
        if inst.last is None:
            mid = inst.price
        else:
            if self._replay is None:
                dt_s = self.dt_s
            else:  # replayed time moves by the file's gaps, not by dt_s
                dt_s = max((self.now - inst.last.ts).total_seconds(), 0.0)
            mid = Decimal(repr(inst.process.next_mid(dt_s / SECONDS_PER_YEAR)))
        inst.seq += 1
        tick = inst.quoter.tick(inst.process.symbol, inst.seq, self.now, mid)
        inst.last = tick
        return tick

    def _replayed(self, tick: Tick) -> Tick:
        assert self._replay is not None
        symbol = tick.symbol
        spec = self._replay.specs[symbol]
        inst = self._instruments.get(symbol)
        if inst is None:
            inst = self._instruments[symbol] = _Instrument(spec, None)
        elif inst.process is not None:
            self.taken_over.append(symbol)  # the actor says so in its log
            inst.process = None
            self._simulated.remove(symbol)
        inst.spec = spec
        inst.seq += 1
        if tick.seq != inst.seq:
            tick = replace(tick, seq=inst.seq)
        inst.last = tick
        return tick
