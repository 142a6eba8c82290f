"""`PositionBook`: a ledger's open positions by id, indexed by symbol.

An entry's concentration checks need what is invested in its symbol (and in symbols
sharing its sector, industry or area), not every open position: with the index, an
entry costs the positions of the few symbols concerned, not a scan of the whole book,
which grows with every position a strategy keeps open.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal

from capflow.actors.model.messages import PositionCapital
from capflow.actors.model.money import CONTEXT, ZERO

#: the sums kept per symbol stay exact, whatever order positions come and go in:
#: quantities and prices have at most 18 significant digits each (`money`), their
#: products 36, and this leaves room for the sums of many
_EXACT = decimal.Context(prec=120, traps=[decimal.InvalidOperation])


def at_entry(p: PositionCapital) -> Decimal:
    """What a position is worth with no market price: its open quantity at its entry
    price."""
    px = p.entry_price or CONTEXT.divide(p.entry_notional, p.qty_total)
    return _EXACT.multiply(p.qty_open, px)


class PositionBook(dict[str, PositionCapital]):
    """A dict of open positions (id -> `PositionCapital`) that knows the ids of each
    symbol's, in the order they were opened. Only item assignment and ``del`` / ``pop``
    change it; the other mutators of dict are refused, so the index cannot go stale."""

    def __init__(self, positions: Iterable[PositionCapital] = ()):
        super().__init__()
        #: symbol -> {position_id: None}, insertion-ordered like the book itself
        self._by_symbol: dict[str, dict[str, None]] = {}
        #: symbol -> (open quantity, open quantity at entry prices) of its positions
        self._sums: dict[str, tuple[Decimal, Decimal]] = {}
        for p in positions:
            self[p.position_id] = p

    def __setitem__(self, position_id: str, p: PositionCapital) -> None:
        old = self.get(position_id)
        if old is not None:
            self._add(old, -1)
            if old.symbol != p.symbol:
                self._unindex(position_id, old.symbol)
        super().__setitem__(position_id, p)
        self._by_symbol.setdefault(p.symbol, {})[position_id] = None
        self._add(p, 1)

    def __delitem__(self, position_id: str) -> None:
        p = self[position_id]
        super().__delitem__(position_id)
        self._add(p, -1)
        self._unindex(position_id, p.symbol)

    _MISSING = object()

    def pop(self, position_id: str, default=_MISSING):
        if position_id in self:
            p = self[position_id]
            del self[position_id]
            return p
        if default is PositionBook._MISSING:
            raise KeyError(position_id)
        return default

    def _add(self, p: PositionCapital, sign: int) -> None:
        qty, value = self._sums.get(p.symbol, (ZERO, ZERO))
        if sign > 0:
            qty, value = _EXACT.add(qty, p.qty_open), _EXACT.add(value, at_entry(p))
        else:
            qty, value = _EXACT.subtract(qty, p.qty_open), _EXACT.subtract(value, at_entry(p))
        self._sums[p.symbol] = (qty, value)

    def _unindex(self, position_id: str, symbol: str) -> None:
        ids = self._by_symbol[symbol]
        del ids[position_id]
        if not ids:
            del self._by_symbol[symbol]
            del self._sums[symbol]

    def _refused(self, *_args, **_kwargs):
        raise TypeError("a PositionBook changes by item assignment, del and pop only")

    update = setdefault = popitem = clear = __ior__ = _refused  # type: ignore[assignment]

    def symbols(self) -> Iterable[str]:
        """The symbols with an open position."""
        return self._by_symbol.keys()

    def value(self, symbol: str, mark: Decimal | None) -> Decimal:
        """The open positions in `symbol` at `mark`, or at their entry prices when there
        is no mark (a mark of zero counts as none)."""
        qty, at_entries = self._sums.get(symbol, (ZERO, ZERO))
        return _EXACT.multiply(qty, mark) if mark else at_entries
