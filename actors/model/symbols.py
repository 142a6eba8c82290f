"""`SymbolSlots`: which symbols have a market here, and a cap on new ones.

A symbol that the simulator does not know gets a price process of its own only once an
order for it is accepted (recorded by its ledger), never for a signal that was refused:
otherwise any client could make the server tick and publish, every second and forever,
for every name it sends. Their number is capped (``[simulator] max_symbols``); an entry
that would need one more is refused with ``UNKNOWN_SYMBOL``. An entry for a new symbol
holds a slot while it is being decided, so concurrent entries for new symbols cannot
together pass the cap.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping

KNOWN, CLAIMED, REFUSED = "known", "claimed", "refused"


class SymbolSlots:
    def __init__(self, configured: Iterable[str], board: Mapping[str, object], *,
                 max_symbols: int, allow_new: bool = True):
        self.max_symbols = max_symbols
        self.allow_new = allow_new
        self._board = board  # the simulator's price board: what has ticked
        self._known: set[str] = set(configured)
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()

    def known(self, symbol: str) -> bool:
        return symbol in self._known or symbol in self._board

    def count(self) -> int:
        """Symbols with a market, and new ones entries are being decided for."""
        with self._lock:
            return len(self._known | self._board.keys() | self._pending.keys())

    def claim(self, symbol: str) -> str:
        """Before deciding an entry in `symbol`: `KNOWN` (it has a market), `CLAIMED` (a
        slot is held for it: `release` it once the entry is decided, whatever happened)
        or `REFUSED` (no new symbol may be added)."""
        if self.known(symbol):
            return KNOWN
        with self._lock:
            if symbol not in self._pending:
                if not self.allow_new:
                    return REFUSED
                if len(self._known | self._board.keys() | self._pending.keys()
                       ) >= self.max_symbols:
                    return REFUSED
            self._pending[symbol] += 1
            return CLAIMED

    def admits(self, symbol: str) -> bool:
        """Whether an entry in `symbol` could be decided now (`risk.check`)."""
        if self.known(symbol):
            return True
        with self._lock:
            return symbol in self._pending or (self.allow_new and len(
                self._known | self._board.keys() | self._pending.keys()) < self.max_symbols)

    def release(self, symbol: str) -> None:
        with self._lock:
            if self._pending.get(symbol, 0) > 1:
                self._pending[symbol] -= 1
            else:
                self._pending.pop(symbol, None)

    def add(self, symbol: str) -> bool:
        """An order in `symbol` was recorded: it has a market from now on. True if new."""
        with self._lock:
            if symbol in self._known:
                return False
            self._known.add(symbol)
            return symbol not in self._board
