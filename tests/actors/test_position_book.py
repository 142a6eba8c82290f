"""The ledger's position book: its per-symbol index and sums always equal what a scan
of the open positions gives, whatever order positions open, change and close in."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capflow.actors.model.messages import PositionCapital
from capflow.actors.model.position_book import PositionBook, at_entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
qtys = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("1000000"), places=9)
prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("999999"), places=8)


def position(pid: str, symbol: str, qty_open: Decimal, qty_total: Decimal,
             price: Decimal | None, notional: Decimal) -> PositionCapital:
    return PositionCapital(pid, symbol, "BUY", qty_open, qty_total, notional, notional,
                           Decimal(0), Decimal(0), "OPEN", NOW, entry_price=price)


ops = st.lists(st.tuples(st.sampled_from(["set", "del", "pop"]), st.integers(0, 7),
                         st.sampled_from(SYMBOLS), qtys, prices, st.booleans()),
               max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops, st.sampled_from([None, Decimal("0"), Decimal("123.45")]))
def test_sums_and_index_equal_a_scan(steps, mark):
    book = PositionBook()
    for op, n, symbol, qty, price, priced in steps:
        pid = f"pos_{n}"
        if op == "set":
            total = qty * 2
            book[pid] = position(pid, symbol, qty, total, price if priced else None,
                                 (total * price).quantize(Decimal("0.01")) or Decimal("0.01"))
        elif op == "del" and pid in book:
            del book[pid]
        elif op == "pop":
            expected = book.get(pid)
            assert book.pop(pid, None) is expected
            assert pid not in book
    assert set(book.symbols()) == {p.symbol for p in book.values()}
    for s in SYMBOLS:
        mine = [p for p in book.values() if p.symbol == s]
        with localcontext(prec=200):  # a scan with no rounding at all
            scan = sum((p.qty_open * mark if mark else at_entry(p) for p in mine), Decimal(0))
        assert book.value(s, mark) == scan


def test_the_other_dict_mutators_are_refused():
    book = PositionBook([position("pos_1", "BTCUSDT", Decimal(1), Decimal(1), Decimal(5),
                                  Decimal(5))])
    for call in (lambda: book.update({}), lambda: book.clear(), lambda: book.popitem(),
                 lambda: book.setdefault("pos_2", None)):
        with pytest.raises(TypeError):
            call()
    assert book.value("BTCUSDT", None) == Decimal(5)
    with pytest.raises(KeyError):
        book.pop("pos_9")
