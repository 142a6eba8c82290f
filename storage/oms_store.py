"""Reads of orders, positions and fills: the lists and lookups of the order ops, the book
an account manager restores at start, and the positions statistics are computed from.

Writes never come here: orders and positions are written by their profile's ledger
actor, through the storage writer, in the same transaction as the capital they hold.
Lists page by id (server ids are time-ordered, so id order is creation order).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine, select

from capflow.actors.model.messages import OrderCapital, PositionCapital
from capflow.storage import schema as s
from capflow.storage.ledger_store import OPEN_ORDER_STATES


def _record(cls: type, row) -> object:
    m = row._mapping
    return cls(**{f: m[f] for f in cls.__struct_fields__})


def _positions(rows) -> list[PositionCapital]:
    return [_record(PositionCapital, r) for r in rows]


class OmsStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    # -- one object -------------------------------------------------------------------

    def get_order(self, profile_id: str, order_id: str) -> OrderCapital | None:
        o = s.orders.c
        with self.engine.connect() as c:
            row = c.execute(select(s.orders).where(o.profile_id == profile_id,
                                                   o.order_id == order_id)).first()
        return None if row is None else _record(OrderCapital, row)

    def get_position(self, profile_id: str, position_id: str) -> PositionCapital | None:
        p = s.positions.c
        with self.engine.connect() as c:
            row = c.execute(select(s.positions).where(p.profile_id == profile_id,
                                                      p.position_id == position_id)).first()
        return None if row is None else _record(PositionCapital, row)

    # -- lists ------------------------------------------------------------------------

    def list_orders(self, profile_id: str, *, status: str | None = None,
                    symbol: str | None = None, limit: int = 100,
                    cursor: str | None = None) -> tuple[list[OrderCapital], str | None]:
        """A page of a profile's orders (oldest first) and the cursor of the next page.
        `status` ``OPEN`` also matches partly filled orders; ``CLOSED`` matches every
        order that is no longer working (filled, canceled, rejected, expired)."""
        o = s.orders.c
        query = select(s.orders).where(o.profile_id == profile_id)
        if status == "OPEN":
            query = query.where(o.status.in_(OPEN_ORDER_STATES))
        elif status == "CLOSED":
            query = query.where(o.status.not_in(OPEN_ORDER_STATES))
        elif status is not None:
            query = query.where(o.status == status)
        if symbol is not None:
            query = query.where(o.symbol == symbol)
        return self._page(query, o.order_id, OrderCapital, limit, cursor)

    def list_positions(self, profile_id: str | None, *, status: str | None = None,
                       symbol: str | None = None, limit: int = 100,
                       cursor: str | None = None
                       ) -> tuple[list[PositionCapital], str | None]:
        p = s.positions.c
        query = select(s.positions)
        if profile_id is not None:
            query = query.where(p.profile_id == profile_id)
        if status is not None:
            query = query.where(p.status == status)
        if symbol is not None:
            query = query.where(p.symbol == symbol)
        return self._page(query, p.position_id, PositionCapital, limit, cursor)

    def _page(self, query, key, cls, limit: int, cursor: str | None):
        """One page by `key` after `cursor`, and the cursor of the next page (one row more
        than asked tells whether there is one)."""
        if cursor:
            query = query.where(key > cursor)
        with self.engine.connect() as c:
            found = [_record(cls, r) for r in c.execute(query.order_by(key).limit(limit + 1))]
        page = found[:limit]
        return page, getattr(page[-1], key.name) if len(found) > limit else None

    def positions_for_stats(self, profile_ids: Iterable[str] | None = None
                            ) -> list[PositionCapital]:
        """Every position (of `profile_ids`, or all), for statistics."""
        query = select(s.positions)
        if profile_ids is not None:
            query = query.where(s.positions.c.profile_id.in_(list(profile_ids)))
        with self.engine.connect() as c:
            return _positions(c.execute(query.order_by(s.positions.c.position_id)))

    def last_fills(self, symbols: Iterable[str]) -> dict[str, tuple[Decimal, datetime]]:
        """(price, ts) of the latest stored fill of each of `symbols` (of any profile: a
        price belongs to the market); symbols never filled are left out."""
        f = s.fills.c
        out: dict[str, tuple[Decimal, datetime]] = {}
        with self.engine.connect() as c:
            for symbol in symbols:
                row = c.execute(select(f.price, f.ts).where(f.symbol == symbol)
                                .order_by(f.ts.desc(), f.fill_id.desc()).limit(1)).first()
                if row is not None:
                    out[symbol] = (row.price, row.ts)
        return out

    # -- what an account manager restores ---------------------------------------------

    def open_book(self, account_id: str
                  ) -> tuple[list[tuple[str, OrderCapital]], list[tuple[str, PositionCapital]]]:
        """(profile_id, order) of every working order and (profile_id, position) of every
        open position of an account. Orders that name no account are capital-only (their
        fills are reported by the embedding program), never sent to a broker."""
        o, p = s.orders.c, s.positions.c
        o_acct = o.account_id == account_id
        p_acct = p.account_id == account_id
        with self.engine.connect() as c:
            orders = [(r.profile_id, _record(OrderCapital, r)) for r in c.execute(
                select(s.orders).where(o_acct, o.status.in_(OPEN_ORDER_STATES))
                .order_by(o.order_id))]
            positions = [(r.profile_id, _record(PositionCapital, r)) for r in c.execute(
                select(s.positions).where(p_acct, p.status == "OPEN")
                .order_by(p.position_id))]
        return orders, positions

    # -- what a reconciliation reads (brokers.reconcile.BookedRows) --------------------

    def booked_fills(self, fill_ids: list[str]) -> set[str]:
        """Those of `fill_ids` that are stored: a venue's trade ids booked once, across
        restarts (the fills table's key)."""
        f = s.fills.c
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(fill_ids), 500):
                out.update(c.execute(select(f.fill_id).where(
                    f.fill_id.in_(fill_ids[i:i + 500]))).scalars())
        return out

    def find_order(self, order_id: str) -> tuple[str, OrderCapital] | None:
        o = s.orders.c
        with self.engine.connect() as c:
            row = c.execute(select(s.orders).where(o.order_id == order_id)).first()
        return None if row is None else (row.profile_id, _record(OrderCapital, row))

    def find_position(self, position_id: str) -> tuple[str, PositionCapital] | None:
        p = s.positions.c
        with self.engine.connect() as c:
            row = c.execute(select(s.positions).where(p.position_id == position_id)).first()
        return None if row is None else (row.profile_id, _record(PositionCapital, row))

    def fee_coins(self, account_id: str) -> dict[str, Decimal]:
        """Coin -> the fees the account's fills paid in a coin that is neither their
        symbol's base nor the money (``fee_coin``)."""
        f, p = s.fills.c, s.positions.c
        out: dict[str, Decimal] = {}
        with self.engine.connect() as c:
            for coin, qty in c.execute(
                    select(f.fee_coin, f.fee_coin_qty)
                    .join(s.positions, p.position_id == f.position_id)
                    .where(p.account_id == account_id, f.fee_coin.is_not(None))):
                out[coin] = out.get(coin, Decimal(0)) + (qty or Decimal(0))
        return out

    def dust(self, account_id: str, exchange: str) -> dict[str, Decimal]:
        """Symbol -> the quantity the account's exits left below its venue's lot step
        (the ``<exchange>:<trade id>:dust`` exit fills a live adapter books): coins held
        at the venue that no position holds."""
        f, p = s.fills.c, s.positions.c
        out: dict[str, Decimal] = {}
        with self.engine.connect() as c:
            for symbol, qty in c.execute(
                    select(f.symbol, f.qty).join(s.positions, p.position_id == f.position_id)
                    .where(p.account_id == account_id, f.kind == "EXIT",
                           f.fill_id.like(f"{exchange}:%:dust"))):
                out[symbol] = out.get(symbol, Decimal(0)) + qty
        return out
