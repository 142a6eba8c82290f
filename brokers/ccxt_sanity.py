"""What a venue's trade must look like to be folded into the adapter's own state.

A venue (or a parser between it and capflow) can answer a trade whose quantity, price or
fee is not a number, is zero or negative, is absurdly large, takes its order's fills
beyond the order's quantity, or is past the order's limit. Such a trade is not booked,
nor added to what the adapter holds (its positions, its orders' filled quantities, the
sums that tell when an order ended): one NaN there poisons every later sum and
comparison. It is reported instead (`FillUnbookable`): the account manager raises the
``fill_unbooked`` alert and sets the account REDUCE_ONLY, as for any fill its ledger
refuses.
"""

from __future__ import annotations

from decimal import Decimal

#: the largest quantity, price or fee a trade may have (the ledger's own bound)
LARGEST = Decimal(10) ** 15


def number_problem(name: str, x: Decimal, *, zero: bool = False) -> str | None:
    """Why `x` is not a usable `name` of a trade, or None."""
    if not x.is_finite():
        return f"its {name} is not a number ({x})"
    if x < 0 or (x == 0 and not zero):
        return f"its {name} is {x}"
    if x > LARGEST:
        return f"its {name} {x} is beyond {LARGEST:.0E}"
    return None


def trade_problem(qty: Decimal, price: Decimal, fee: Decimal) -> str | None:
    """Why a trade of this quantity, price and fee (the venue's fee amount, in whatever
    coin) cannot be booked, or None."""
    return (number_problem("quantity", qty) or number_problem("price", price)
            or number_problem("fee", fee, zero=True))


def beyond_problem(done: Decimal, qty: Decimal, order_qty: Decimal, price: Decimal,
                   side: str, limit: Decimal | None) -> str | None:
    """Why a trade of `qty` at `price` cannot belong to an order of `order_qty` at `limit`
    (None: a market order) whose trades so far came to `done`, or None. A buy above its
    limit (a MARKET entry's is the price its capital was reserved for) or a sell below
    it broke the order's terms: it would spend capital nothing reserved, past any
    ``max_live_capital``."""
    if done + qty > order_qty:
        return (f"its quantity {qty} takes the order's fills to {done + qty}, beyond the "
                f"order's {order_qty}")
    if limit is not None and (price > limit if side == "BUY" else price < limit):
        return f"its price {price} is past the order's limit {limit} ({side})"
    return None
