"""Recorded market data replayed as ticks: a CSV file of quotes or bars, read
as it is needed."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from msgspec.structs import replace

from capflow.actors.model.money import (
    CONTEXT,
    MAX_ADJUSTED_EXPONENT,
    round_down,
    round_half_even,
    round_up,
)
from capflow.actors.model.settings import SimulatorConfig, SymbolConfig
from capflow.actors.model.ticks import (
    NEW_SYMBOL_QTY_PLACES,
    Quoter,
    Tick,
    new_price_places,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_EPOCH_SECONDS = re.compile(r"[+-]?\d+(\.\d*)?")


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
    if d and d.adjusted() > MAX_ADJUSTED_EXPONENT:
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
        places = new_price_places(*prices)
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
        quoter = Quoter(spec)
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
