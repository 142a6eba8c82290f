"""Filling a `BybitVenue` with an account's history at once, without a request per order
(the fixture API's ``fill`` scripts one fill of an order that exists).

``seed_orders(venue, symbol, open_orders=5000, filled_orders=5000, price="20000.00",
qty="0.0001", prefix="seed")``: places ``open_orders`` resting limit BUYs (left open) and
``filled_orders`` more that the venue fills at once, one execution each (they go to the
order history and the execution list), as ``/v5/order/create`` and a fill would; client
order ids ``<prefix>o<n>`` and ``<prefix>f<n>``. Resting orders do not match while
``auto_match`` is off; the venue's balances must cover them. Returns the order ids.
"""

from __future__ import annotations

from decimal import Decimal


def seed_orders(venue, symbol: str, open_orders: int = 5000, filled_orders: int = 5000,
                price: str = "20000.00", qty: str = "0.0001", prefix: str = "seed") -> list:
    ids = []
    px = Decimal(price)
    with venue.lock:
        for kind, n in (("o", open_orders), ("f", filled_orders)):
            for i in range(n):
                order = venue.book.create({"category": "spot", "symbol": symbol,
                                           "side": "Buy", "orderType": "Limit",
                                           "qty": qty, "price": price,
                                           "orderLinkId": f"{prefix}{kind}{i}"})
                if kind == "f":
                    venue.book.execute(order, order.qty, px, is_maker=True)
                ids.append(order.order_id)
    return ids
