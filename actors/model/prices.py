"""Whether a venue's prices are fresh: `PriceWatch`, shared by the thread that fetches
them (it notes every answer) and the threads that read it (the entry flow refuses new
entries on an account whose prices are stale, with ``STALE_PRICES``)."""

from __future__ import annotations

import time

#: the reason code of an entry refused because the account's venue prices are stale
STALE_PRICES = "STALE_PRICES"


class PriceWatch:
    """The age of an account's venue prices. Prices are stale when the feed has symbols
    to price and no answer came for ``stale_after_s`` seconds (counted from when it
    began pricing them, before the first answer). Plain attribute writes: one writer
    thread, any number of readers."""

    def __init__(self, stale_after_s: float, clock=time.monotonic):
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._since: float | None = None  # pricing began (None: nothing to price)
        self._last: float | None = None  # the last answer
        #: symbol -> when its last price arrived (replaced whole by the writer)
        self._symbols: dict[str, float] = {}

    def watching(self, on: bool) -> None:
        """The feed has symbols to price (or no longer has)."""
        if not on:
            self._since = None
        elif self._since is None:
            self._since = self._clock()

    def fresh(self, symbols=()) -> None:
        """Prices (of `symbols`) arrived just now."""
        now = self._last = self._clock()
        if symbols:
            self._symbols = {**self._symbols, **dict.fromkeys(symbols, now)}

    def symbol_ages(self) -> dict[str, float]:
        """Seconds since each symbol's last price arrived (symbols priced at least once)."""
        now = self._clock()
        return {s: now - t for s, t in self._symbols.items()}

    def age_s(self) -> float | None:
        """Seconds since prices last arrived (since pricing began, before any); None when
        nothing is priced."""
        since = self._since
        if since is None:
            return None
        last = self._last
        return self._clock() - (since if last is None or last < since else last)

    def stale(self) -> bool:
        age = self.age_s()
        return age is not None and age > self.stale_after_s
