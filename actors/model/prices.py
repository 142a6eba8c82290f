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
        #: symbol -> ((bid, ask, last), when it last arrived, when it last changed),
        #: replaced whole by the writer
        self._symbols: dict[str, tuple[tuple, float, float]] = {}

    def watching(self, on: bool) -> None:
        """The feed has symbols to price (or no longer has)."""
        if not on:
            self._since = None
        elif self._since is None:
            self._since = self._clock()

    def fresh(self, ticks=()) -> None:
        """Prices arrived just now (`ticks`: those of each symbol, `Tick`s)."""
        now = self._last = self._clock()
        if ticks:
            seen = dict(self._symbols)
            for t in ticks:
                price = (t.bid, t.ask, t.last)
                before = seen.get(t.symbol)
                changed = now if before is None or before[0] != price else before[2]
                seen[t.symbol] = (price, now, changed)
            self._symbols = seen

    def symbol_ages(self) -> dict[str, tuple[float, float]]:
        """Per symbol priced at least once: (seconds since its last price arrived,
        seconds since its bid, ask or last last changed). A venue that keeps answering
        with prices that no longer move (a stuck feed) shows in the second only."""
        now = self._clock()
        return {s: (now - arrived, now - changed)
                for s, (_, arrived, changed) in self._symbols.items()}

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
