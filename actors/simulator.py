"""Simulated market data: `Tick`, `GbmProcess`, `CsvReplay`, `MarketSimulator` (pure domain)
and `MarketSimulatorActor` (its actor).

Every simulated symbol follows its own geometric Brownian motion on the mid price, driven
by its own random stream seeded from (global seed, symbol name): the same seed and config
give the same ticks, and adding a symbol never changes the prices of the others. The mid
is a float internally and becomes a `Decimal` only when a `Tick` is built: bid rounded
down, ask rounded up, last rounded half-even, all to the symbol's price places, bid at
least one price step below ask.

With ``replay`` set, ticks come from a CSV file of ticks or OHLCV bars instead (see
`CsvReplay`); symbols the file does not contain may still be simulated alongside
(`MarketSimulator.ensure_symbol`).
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from operator import attrgetter
from typing import Any

import msgspec
import pykka
from loguru import logger
from msgspec.structs import replace

from capflow.actors.clock import Clock
from capflow.actors.config import SimulatorConfig, SymbolConfig
from capflow.actors.money import CONTEXT, quant, round_down, round_half_even, round_up

#: simulated markets trade around the clock: a year is 365 days of seconds
SECONDS_PER_YEAR = 365 * 24 * 3600
#: most steps one `advance` call may run
MAX_ADVANCE = 10_000_000
#: a symbol first seen through `ensure_symbol` (or in a replay without config)
NEW_SYMBOL_SPREAD_BPS = 2.0
NEW_SYMBOL_QTY_PLACES = 6
MIN_NEW_PRICE_PLACES = 2
MAX_NEW_PRICE_PLACES = 8
#: the float mid is kept inside these bounds so a Tick can always be built
_MIN_MID = 1e-12
_MAX_MID = 1e14
_MAX_PLACES = 18
#: prices and quantities stay below 10**15, like every amount in capflow
_MAX_ADJUSTED_EXPONENT = 14
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_SECONDS = re.compile(r"[+-]?\d+(\.\d*)?")
_BPS_DIVISOR = Decimal(20000)  # half the spread: mid * bps / 10000 / 2

Deliver = Callable[[list["Tick"]], None]


class Tick(msgspec.Struct, frozen=True):
    """One quote of one symbol. `liquidity` is the quantity available on each side."""

    symbol: str
    #: per symbol, from 1
    seq: int
    ts: datetime
    bid: Decimal
    ask: Decimal
    last: Decimal
    liquidity: Decimal


# -- helpers -----------------------------------------------------------------------------


def _stream_seed(seed: int, symbol: str) -> int:
    """A seed per (seed, symbol) that is the same in every process (no `hash()`)."""
    return ((seed & 0xFFFF_FFFF_FFFF_FFFF) << 32) | zlib.crc32(symbol.encode("utf-8"))


def _places_needed(d: Decimal) -> int:
    exponent = d.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _new_price_places(*prices: Decimal) -> int:
    needed = max(_places_needed(p) for p in prices)
    return min(max(needed, MIN_NEW_PRICE_PLACES), MAX_NEW_PRICE_PLACES)


def _to_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a decimal number, not {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    elif isinstance(value, float):
        d = Decimal(repr(value))
    else:
        raise ValueError(f"{what} must be a decimal number, not {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"{what} must be finite, not {value!r}")
    if d and d.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise ValueError(f"{what} is too large (at most 10^15): {value!r}")
    return d


def _check_spec(symbol: str, spec: SymbolConfig) -> None:
    where = f"simulator symbol {symbol!r}"
    if not symbol:
        raise ValueError("a simulator symbol must have a name")
    if not spec.price.is_finite() or spec.price <= 0:
        raise ValueError(f"{where}: price must be greater than zero")
    if not (math.isfinite(spec.drift) and math.isfinite(spec.volatility)):
        raise ValueError(f"{where}: drift and volatility must be finite")
    if spec.volatility < 0:
        raise ValueError(f"{where}: volatility must not be negative")
    if not math.isfinite(spec.spread_bps) or spec.spread_bps < 0:
        raise ValueError(f"{where}: spread_bps must not be negative")
    for name in ("price_places", "qty_places"):
        if not 0 <= getattr(spec, name) <= _MAX_PLACES:
            raise ValueError(f"{where}: {name} must be between 0 and {_MAX_PLACES}")
    if not spec.liquidity.is_finite() or spec.liquidity < 0:
        raise ValueError(f"{where}: liquidity must not be negative")


class _Quoter:
    """Turns a mid price into a quantized Tick for one symbol's spec."""

    __slots__ = ("liquidity", "places", "spread_bps", "step")

    def __init__(self, spec: SymbolConfig):
        self.places = spec.price_places
        self.step = quant(spec.price_places)
        self.spread_bps = Decimal(repr(float(spec.spread_bps)))
        self.liquidity = round_down(spec.liquidity, spec.qty_places)

    def quote(self, mid: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        half = CONTEXT.divide(CONTEXT.multiply(mid, self.spread_bps), _BPS_DIVISOR)
        bid = round_down(CONTEXT.subtract(mid, half), self.places)
        ask = round_up(CONTEXT.add(mid, half), self.places)
        if bid < self.step:
            bid = self.step
        if ask - bid < self.step:
            ask = bid + self.step
        last = min(max(round_half_even(mid, self.places), bid), ask)
        return bid, ask, last

    def tick(self, symbol: str, seq: int, ts: datetime, mid: Decimal,
             liquidity: Decimal | None = None) -> Tick:
        bid, ask, last = self.quote(mid)
        return Tick(symbol, seq, ts, bid, ask, last,
                    self.liquidity if liquidity is None else liquidity)


# -- the price process -------------------------------------------------------------------


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


# -- replay ------------------------------------------------------------------------------

_TICK_REQUIRED = ("ts", "symbol", "bid", "ask")
_TICK_OPTIONAL = ("last", "liquidity")
_BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


def _parse_ts(text: str) -> datetime:
    if _EPOCH_SECONDS.fullmatch(text):
        micros = (Decimal(text) * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN)
        try:
            return _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise ValueError(f"ts is out of range: {text!r}") from None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ts is neither ISO-8601 nor epoch seconds: {text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _parse_number(text: str, name: str, *, positive: bool) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} is not a decimal number: {text!r}") from None
    if not d.is_finite():
        raise ValueError(f"{name} must be finite: {text!r}")
    if d and d.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise ValueError(f"{name} is too large (at most 10^15): {text!r}")
    if positive and d <= 0:
        raise ValueError(f"{name} must be greater than zero: {text!r}")
    if d < 0:
        raise ValueError(f"{name} must not be negative: {text!r}")
    return d


class CsvReplay:
    """Ticks read from a CSV file, in file order; also an iterator of `Tick`.

    The header picks the layout (column names are case-insensitive, in any order):

    * ticks: ``ts,symbol,bid,ask[,last][,liquidity]``; an empty or missing `last` is the
      mid, an empty or missing `liquidity` the symbol's configured one;
    * OHLCV bars: ``ts,symbol,open,high,low,close,volume``; a bar becomes 4 ticks at its
      ts -- open, high, low, close when close >= open, else open, low, high, close -- each
      quoted around that price with the symbol's configured spread (1 price step for a
      symbol without config), with liquidity volume / 4 (the configured liquidity when
      the volume is empty).

    `ts` is ISO-8601 (naive means UTC) or epoch seconds; timestamps must not decrease.
    Prices are read as `Decimal` from the text and quantized to the symbol's price places
    (bid down, ask up, others half-even); a symbol without config gets the places its
    prices need (at least 2, at most 8). A bad row raises `ValueError` naming the file and
    line; the replay ends there. `step()` returns the next group of ticks sharing one ts.
    """

    def __init__(self, path: str | os.PathLike[str], config: SimulatorConfig | None = None):
        self.path = os.fspath(path)
        self._config = config if config is not None else SimulatorConfig(symbols={})
        #: the spec used for each symbol seen so far
        self.specs: dict[str, SymbolConfig] = {}
        self._seq: dict[str, int] = {}
        self._last_ts: datetime | None = None
        self._file = open(self.path, newline="", encoding="utf-8-sig")  # noqa: SIM115
        try:
            self._reader = csv.reader(self._file)
            self._columns, self._bars = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self._ticks = self._generate()
        self._peek: Tick | None = None
        self._error: ValueError | None = None
        self._advance()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- reading --

    def _fail(self, line: int, reason: str) -> ValueError:
        return ValueError(f"{self.path}, line {line}: {reason}")

    def _rows(self) -> Iterator[list[str]]:
        """The non-blank rows; a file that is not readable CSV text fails at its line."""
        while True:
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._fail(self._reader.line_num, f"unreadable CSV: {exc}") from None
            except UnicodeDecodeError as exc:  # decoded in chunks: the line is approximate
                raise ValueError(f"{self.path}: not UTF-8 text after line "
                                 f"{self._reader.line_num}: {exc}") from None
            if any(cell.strip() for cell in row):
                yield row

    def _read_header(self) -> tuple[list[str], bool]:
        for row in self._rows():
            names = [cell.strip().lower() for cell in row]
            given = set(names)
            if len(given) == len(names):
                if given == set(_BAR_COLUMNS):
                    return names, True
                if set(_TICK_REQUIRED) <= given <= {*_TICK_REQUIRED, *_TICK_OPTIONAL}:
                    return names, False
            raise self._fail(self._reader.line_num,
                             f"unrecognized header {','.join(names)!r}; expected "
                             "ts,symbol,bid,ask[,last][,liquidity] or "
                             "ts,symbol,open,high,low,close,volume")
        raise self._fail(1, "the file is empty (no header)")

    def _generate(self) -> Iterator[Tick]:
        for row in self._rows():
            line = self._reader.line_num
            try:
                ticks = self._parse(row)
            except ValueError as exc:
                raise self._fail(line, str(exc)) from None
            yield from ticks

    def _spec(self, symbol: str, prices: Sequence[Decimal]) -> SymbolConfig:
        configured = self._config.symbols.get(symbol)
        if configured is not None:
            return configured
        places = _new_price_places(*prices)
        known = self.specs.get(symbol)
        if known is not None:
            if places <= known.price_places:
                return known
            return replace(known, price_places=places)
        return SymbolConfig(price=prices[0], drift=0.0,
                            volatility=self._config.new_symbol_volatility, spread_bps=0.0,
                            price_places=places, qty_places=NEW_SYMBOL_QTY_PLACES,
                            liquidity=self._config.new_symbol_liquidity)

    def _parse(self, row: list[str]) -> list[Tick]:
        if len(row) != len(self._columns):
            raise ValueError(f"expected {len(self._columns)} fields, found {len(row)}")
        f = {name: cell.strip() for name, cell in zip(self._columns, row, strict=True)}
        ts = _parse_ts(f["ts"])
        symbol = f["symbol"]
        if not symbol:
            raise ValueError("symbol is empty")
        if self._last_ts is not None and ts < self._last_ts:
            raise ValueError(f"ts {f['ts']} is earlier than the row before "
                             f"({self._last_ts.isoformat()})")
        spec, rows = self._bar(f, symbol) if self._bars else self._quote(f, symbol)
        seq = self._seq.get(symbol, 0)
        ticks = []
        for bid, ask, last, liquidity in rows:
            seq += 1
            ticks.append(Tick(symbol, seq, ts, bid, ask, last, liquidity))
        # commit only once the whole row is valid
        self.specs[symbol] = spec
        self._seq[symbol] = seq
        self._last_ts = ts
        return ticks

    def _quote(self, f: dict[str, str], symbol: str):
        bid = _parse_number(f["bid"], "bid", positive=True)
        ask = _parse_number(f["ask"], "ask", positive=True)
        if bid >= ask:
            raise ValueError(f"bid {f['bid']} is not below ask {f['ask']}")
        last = _parse_number(f["last"], "last", positive=True) if f.get("last") else None
        liquidity = (_parse_number(f["liquidity"], "liquidity", positive=False)
                     if f.get("liquidity") else None)
        spec = self._spec(symbol, [bid, ask] if last is None else [bid, ask, last])
        places = spec.price_places
        bid_q, ask_q = round_down(bid, places), round_up(ask, places)
        if bid_q <= 0:
            raise ValueError(f"bid {f['bid']} is below one price step")
        mid = CONTEXT.divide(CONTEXT.add(bid, ask), Decimal(2))
        last_q = round_half_even(mid if last is None else last, places)
        if liquidity is None:
            liq = round_down(spec.liquidity, spec.qty_places)
        else:
            liq = round_down(liquidity, spec.qty_places)
        return spec, [(bid_q, ask_q, last_q, liq)]

    def _bar(self, f: dict[str, str], symbol: str):
        o, h, lo, c = (_parse_number(f[k], k, positive=True)
                       for k in ("open", "high", "low", "close"))
        if h < max(o, c) or lo > min(o, c):
            raise ValueError(f"inconsistent bar: high {f['high']} / low {f['low']} do not "
                             f"contain open {f['open']} and close {f['close']}")
        volume = (_parse_number(f["volume"], "volume", positive=False)
                  if f["volume"] else None)
        spec = self._spec(symbol, [o, h, lo, c])
        quoter = _Quoter(spec)
        if volume is not None:
            liquidity = round_down(CONTEXT.divide(volume, Decimal(4)), spec.qty_places)
        else:
            liquidity = quoter.liquidity
        path = (o, h, lo, c) if c >= o else (o, lo, h, c)
        return spec, [(*quoter.quote(p), liquidity) for p in path]

    # -- consuming --

    def _advance(self) -> None:
        try:
            self._peek = next(self._ticks, None)
        except ValueError as exc:
            self._peek = None
            self._error = exc
        if self._peek is None:
            self.close()

    @property
    def exhausted(self) -> bool:
        """True once every tick has been returned (or a bad row was reported)."""
        return self._peek is None and self._error is None

    def __iter__(self) -> CsvReplay:
        return self

    def __next__(self) -> Tick:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._peek is None:
            raise StopIteration
        tick = self._peek
        self._advance()
        return tick

    def step(self) -> list[Tick]:
        """The next group of ticks sharing one ts, in file order; [] at the end."""
        first = next(self, None)
        if first is None:
            return []
        group = [first]
        while self._peek is not None and self._peek.ts == first.ts:
            group.append(next(self))
        return group

    def close(self) -> None:
        self._ticks.close()
        self._file.close()


# -- the simulator -----------------------------------------------------------------------


class _Instrument:
    __slots__ = ("last", "price", "process", "quoter", "seq", "spec")

    def __init__(self, spec: SymbolConfig, process: GbmProcess | None):
        self.spec = spec
        self.process = process
        self.price = spec.price
        self.quoter = _Quoter(spec)
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
            _check_spec(symbol, spec)
        self.config = config
        self.dt_s = float(dt_s)
        #: simulated time of the last step (`start` before the first)
        self.now = start.astimezone(UTC)
        self._base = self.now
        self._steps_since_base = 0
        self._instruments: dict[str, _Instrument] = {}
        self._simulated: list[str] = []  # sorted
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
        price = _to_decimal(price, "price")
        if price <= 0:
            raise ValueError(f"price must be greater than zero, not {price}")
        if symbol in self._instruments:
            return False
        configured = self.config.symbols.get(symbol) if self._replay is not None else None
        if configured is not None:
            spec = replace(configured, price=price)
        else:
            places = _new_price_places(price)
            start = round_half_even(price, places)
            if start <= 0:
                raise ValueError(f"price {price} is below one step of {places} places")
            spec = SymbolConfig(price=start, drift=0.0,
                                volatility=self.config.new_symbol_volatility,
                                spread_bps=NEW_SYMBOL_SPREAD_BPS, price_places=places,
                                qty_places=NEW_SYMBOL_QTY_PLACES,
                                liquidity=self.config.new_symbol_liquidity)
        _check_spec(symbol, spec)
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
            logger.info("replay data for {} takes over from its simulation", symbol)
            inst.process = None
            self._simulated.remove(symbol)
        inst.spec = spec
        inst.seq += 1
        if tick.seq != inst.seq:
            tick = replace(tick, seq=inst.seq)
        inst.last = tick
        return tick


# -- the actor ---------------------------------------------------------------------------


class _RealtimeTick(msgspec.Struct, frozen=True):
    generation: int


class _Ticker:
    """A daemon thread that tells the actor to advance one step per interval.

    At most one tick is outstanding: when the actor falls behind, ticks are skipped
    rather than queued up.
    """

    def __init__(self, ref: pykka.ActorRef[Any], interval_s: float, generation: int):
        self.generation = generation
        self.pending = threading.Event()
        self._ref = ref
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"market-ticker-{generation}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, 2 * self._interval))

    def _run(self) -> None:
        message = _RealtimeTick(self.generation)
        deadline = time.monotonic()
        while True:
            deadline += self._interval
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            now = time.monotonic()
            if now - deadline > self._interval:  # fell behind: do not burst to catch up
                deadline = now
            if self.pending.is_set():
                continue
            self.pending.set()
            try:
                self._ref.tell(message)
            except pykka.ActorDeadError:
                return


class MarketSimulatorActor(pykka.ThreadingActor):
    """Owns a `MarketSimulator`; hands every step's ticks to its subscribers.

    Each step updates `board` (symbol -> latest Tick; other threads read it with
    ``board.get(symbol)`` without asking the actor), then calls every subscriber in
    subscription order, then `publish`, all inside the actor thread with the same list
    (do not mutate it). A callback that raises is logged and skipped.

    Step mode: only `advance(n)` moves the market. `start_realtime()` advances it one
    step every ``tick_interval_s`` until `stop_realtime()` or the actor stops.
    """

    use_daemon_thread = True

    def __init__(self, config: SimulatorConfig, clock: Clock,
                 publish: Deliver | None = None, *, board: dict[str, Tick] | None = None):
        super().__init__()
        self.config = config
        self.board: dict[str, Tick] = {} if board is None else board
        self._sim = MarketSimulator(config, clock.now())
        self._publish = publish
        self._subscribers: dict[str, Deliver] = {}
        self._ticker: _Ticker | None = None
        self._generation = 0

    @classmethod
    def start_with_board(cls, config: SimulatorConfig, clock: Clock,
                         publish: Deliver | None = None,
                         ) -> tuple[pykka.ActorRef[MarketSimulatorActor], dict[str, Tick]]:
        """Start the actor; return its ref and its price board."""
        board: dict[str, Tick] = {}
        ref = cls.start(config, clock, publish, board=board)
        return ref, board

    # -- lifecycle --

    def on_start(self) -> None:
        for tick in self._sim.opening_quotes():
            self.board.setdefault(tick.symbol, tick)

    def on_stop(self) -> None:
        self.stop_realtime()
        self._sim.close()

    def on_failure(self, *exc_info: Any) -> None:  # pragma: no cover -- defensive
        self.stop_realtime()
        self._sim.close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _RealtimeTick):
            self._on_realtime_tick(message)
            return None
        return super().on_receive(message)

    # -- public API (call through ``ref.proxy()``) --

    def subscribe(self, key: str, deliver: Deliver) -> None:
        """Deliver every step's ticks to `deliver`; a known key replaces its callback."""
        self._subscribers[key] = deliver

    def unsubscribe(self, key: str) -> bool:
        return self._subscribers.pop(key, None) is not None

    def advance(self, n: int) -> int:
        """Run `n` steps (1..10_000_000); the number of steps that produced ticks.

        Fewer than `n` only when nothing is left to tick (replay used up, nothing
        simulated).
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ADVANCE:
            raise ValueError(f"n must be an integer from 1 to {MAX_ADVANCE}, not {n!r}")
        done = 0
        for _ in range(n):
            if not self._step():
                break
            done += 1
        return done

    def ensure_symbol(self, symbol: str, price: Decimal) -> bool:
        return self._sim.ensure_symbol(symbol, price)

    def last(self, symbol: str) -> Tick | None:
        return self._sim.last(symbol)

    def symbols(self) -> list[str]:
        return self._sim.symbols()

    def spec(self, symbol: str) -> SymbolConfig | None:
        return self._sim.spec(symbol)

    def now(self) -> datetime:
        """Simulated time of the last step."""
        return self._sim.now

    def start_realtime(self) -> bool:
        """Advance one step every ``tick_interval_s``; False if already running."""
        if self._ticker is not None:
            return False
        interval = self.config.tick_interval_s
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"tick_interval_s must be greater than zero, not {interval!r}")
        self._generation += 1
        self._ticker = _Ticker(self.actor_ref, interval, self._generation)
        self._ticker.start()
        return True

    def stop_realtime(self) -> bool:
        """Stop the real-time ticks (none is delivered after this returns)."""
        ticker, self._ticker = self._ticker, None
        if ticker is None:
            return False
        ticker.stop()
        return True

    # -- internals --

    def _on_realtime_tick(self, message: _RealtimeTick) -> None:
        ticker = self._ticker
        if ticker is None or message.generation != ticker.generation:
            return  # sent before stop_realtime()
        ticker.pending.clear()
        try:
            self._step()
        except Exception:
            logger.exception("market simulator step failed; real-time ticks stopped")
            self.stop_realtime()

    def _step(self) -> bool:
        ticks = self._sim.step()
        if not ticks:
            return False
        board = self.board
        for tick in ticks:
            board[tick.symbol] = tick
        for key, deliver in list(self._subscribers.items()):
            try:
                deliver(ticks)
            except Exception:
                logger.exception("market data subscriber {!r} failed", key)
        if self._publish is not None:
            try:
                self._publish(ticks)
            except Exception:
                logger.exception("market data publish hook failed")
        return True
