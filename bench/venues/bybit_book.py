"""The state and matching engine behind the Bybit emulator (`bench/venues/bybit.py`): spot
instruments, prices, one unified account's balances, orders and executions.

Everything here is plain Python under one lock held by the caller (`BybitVenue`); the HTTP
layer turns its answers into Bybit's JSON shapes. A refusal is raised as `VenueError` with
Bybit's retCode and retMsg, and nothing has changed when it is raised.

Matching, simple but honest:
- a taker fill happens when an order crosses the price the test set (a BUY at or above the
  ask, a SELL at or below the bid); it fills at that ask / bid, up to the size shown there
  (unlimited unless the test gave a size; what a fill takes is gone from the size);
- a resting limit order fills as maker at its own price when a later `set_price` crosses it;
- MARKET orders and IOC / FOK limits never rest: what does not fill at once is cancelled
  (FOK cancels the whole order unless all of it can fill); a PostOnly order that would take
  liquidity is accepted and then cancelled (rejectReason EC_PostOnlyWillTakeLiquidity);
- the test scripts any other fill with `fill()` (partial fills, fills after a cancel request).
Fees as Bybit spot takes them: a BUY pays its fee in the base coin (it receives the filled
quantity minus the fee), a SELL in the quote coin; the rates are `fee_taker` / `fee_maker`.
With `fee_coin` set, every fee is charged in that coin (a fee token) at its last price.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal

#: Bybit's spot base fee rate for non-VIP accounts, taker and maker (0.1 %)
BASE_FEE_RATE = Decimal("0.001")

FINAL = ("Filled", "Cancelled", "PartiallyFilledCanceled", "Rejected")


class VenueError(Exception):
    """A refusal in Bybit's terms: ``ret_code`` and ``ret_msg`` go into the JSON answer."""

    def __init__(self, ret_code: int, ret_msg: str):
        super().__init__(f"{ret_code} {ret_msg}")
        self.ret_code = ret_code
        self.ret_msg = ret_msg


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: Decimal | None) -> str:
    """A Decimal as Bybit writes numbers: a plain string, no exponent, no trailing zeros."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


@dataclass
class Instrument:
    """One spot pair's rules (the fields of instruments-info' lotSizeFilter/priceFilter)."""

    symbol: str
    base: str
    quote: str
    base_precision: Decimal
    quote_precision: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_amt: Decimal
    max_amt: Decimal
    tick: Decimal
    status: str = "Trading"


def default_instruments() -> list[Instrument]:
    """BTCUSDT and ETHUSDT with the filters Bybit spot published for them."""
    d = Decimal
    return [
        Instrument("BTCUSDT", "BTC", "USDT", d("0.000001"), d("0.00000001"), d("0.000048"),
                   d("71.73956243"), d("1"), d("2000000"), d("0.01")),
        Instrument("ETHUSDT", "ETH", "USDT", d("0.00001"), d("0.0000001"), d("0.00062"),
                   d("1229.2336343"), d("1"), d("2000000"), d("0.01")),
    ]


@dataclass
class Quote:
    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal | None = None  # None: as much as any order wants
    ask_size: Decimal | None = None


@dataclass
class Balance:
    total: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)

    @property
    def free(self) -> Decimal:
        return self.total - self.locked


@dataclass
class Order:
    order_id: str
    link_id: str
    symbol: str
    side: str  # Buy | Sell
    order_type: str  # Limit | Market
    qty: Decimal  # base coin, or quote coin for a MARKET order in quoteCoin
    price: Decimal  # 0 for MARKET
    tif: str  # GTC | IOC | FOK | PostOnly
    market_unit: str  # baseCoin | quoteCoin | "" (limit orders)
    reduce_only: bool
    created: int
    updated: int
    status: str = "New"
    cum_qty: Decimal = Decimal(0)
    cum_value: Decimal = Decimal(0)
    cum_fee: Decimal = Decimal(0)
    fee_coin: str = ""
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"
    locked: Decimal = Decimal(0)  # what this order holds of its coin's balance
    cancel_pending: bool = False  # a cancel was acknowledged; the test finishes it

    @property
    def in_quote(self) -> bool:
        return self.order_type == "Market" and self.market_unit == "quoteCoin"

    @property
    def leaves(self) -> Decimal:
        """What is left to fill, in the unit of ``qty``; 0 once the order is final."""
        if self.status in FINAL:
            return Decimal(0)
        return self.qty - (self.cum_value if self.in_quote else self.cum_qty)

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL


@dataclass
class Execution:
    exec_id: str
    order: Order
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_coin: str
    fee_rate: Decimal
    is_maker: bool
    time: int
    leaves_after: Decimal
    seq: int


@dataclass
class Book:
    """Instruments, prices, balances, orders and executions of one unified account."""

    instruments: dict[str, Instrument] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)  # by orderId, in creation order
    by_link: dict[str, Order] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    fee_taker: Decimal = BASE_FEE_RATE
    fee_maker: Decimal = BASE_FEE_RATE
    fee_coin: str = ""  # a fee token every fee is charged in; "": Bybit spot's way
    auto_match: bool = True  # resting orders fill when set_price crosses them
    defer_cancels: bool = False  # cancels are acknowledged and left pending
    max_link: int = 36  # the longest client order id the venue takes

    def __post_init__(self):
        self._order_ids = itertools.count(1_900_000_000_000_000_001)
        self._exec_ids = itertools.count(2_100_000_000_000_000_001)
        self._seq = itertools.count(1)

    # -- setup -------------------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise VenueError(170121, "Invalid symbol.")
        return inst

    def balance(self, coin: str) -> Balance:
        return self.balances.setdefault(coin, Balance())

    def set_price(self, symbol: str, bid, ask, last=None, bid_size=None, ask_size=None):
        self.instrument(symbol)
        bid, ask = Decimal(str(bid)), Decimal(str(ask))
        last = Decimal(str(last)) if last is not None else (bid + ask) / 2
        self.quotes[symbol] = Quote(bid, ask, last, _size(bid_size), _size(ask_size))
        if self.auto_match:
            for order in list(self.orders.values()):
                if order.symbol == symbol and order.is_open and not order.cancel_pending:
                    self._take(order, maker=True)

    # -- orders ------------------------------------------------------------------------
    def find(self, order_id: str | None = None, link_id: str | None = None) -> Order | None:
        if order_id:
            order = self.orders.get(order_id)
            if order is not None and (not link_id or order.link_id == link_id):
                return order
            return None
        if link_id:
            return self.by_link.get(link_id)
        return None

    def create(self, req: dict) -> Order:
        """Validate and place one order (the body of /v5/order/create); match it at once."""
        if req.get("category") != "spot":
            raise VenueError(10001, "This emulator serves category=spot only.")
        inst = self.instrument(str(req.get("symbol", "")))
        side = req.get("side")
        otype = req.get("orderType")
        if side not in ("Buy", "Sell"):
            raise VenueError(10001, "params error: side invalid")
        if otype not in ("Limit", "Market"):
            raise VenueError(10001, "params error: orderType invalid")
        link = str(req.get("orderLinkId") or "")
        if len(link) > self.max_link or not all(c.isalnum() or c in "-_" for c in link):
            raise VenueError(10001, "params error: orderLinkId length or characters invalid")
        if link and link in self.by_link:
            raise VenueError(170141, "Duplicate clientOrderId.")
        qty = _decimal(req.get("qty"), "qty")
        tif = str(req.get("timeInForce") or ("IOC" if otype == "Market" else "GTC"))
        if tif not in ("GTC", "IOC", "FOK", "PostOnly"):
            raise VenueError(10001, "params error: timeInForce invalid")
        unit = ""
        price = Decimal(0)
        if otype == "Market":
            tif = "IOC"
            unit = req.get("marketUnit") or ("quoteCoin" if side == "Buy" else "baseCoin")
            if unit not in ("baseCoin", "quoteCoin"):
                raise VenueError(10001, "params error: marketUnit invalid")
        else:
            price = _decimal(req.get("price"), "price")
            if price % inst.tick:
                raise VenueError(170134, "Order price decimal too long.")
        step = inst.quote_precision if unit == "quoteCoin" else inst.base_precision
        if qty % step:
            raise VenueError(170137, "Order volume decimal too long.")
        if unit == "quoteCoin":
            if qty < inst.min_amt:
                raise VenueError(170140, "Order value exceeded lower limit.")
        else:
            if qty < inst.min_qty:
                raise VenueError(170136, "Order quantity exceeded lower limit.")
            if qty > inst.max_qty:
                raise VenueError(170135, "Order quantity exceeded upper limit.")
            if otype == "Limit" and qty * price < inst.min_amt:
                raise VenueError(170140, "Order value exceeded lower limit.")
        stamp = now_ms()
        order_id = str(next(self._order_ids))
        order = Order(order_id, link or str(int(order_id) + 1), inst.symbol, side, otype, qty,
                      price, tif, unit, bool(req.get("reduceOnly", False)), stamp, stamp)
        need_coin, need = self._needs(order, inst)
        if need > self.balance(need_coin).free:
            raise VenueError(170131, "Insufficient balance.")
        self.orders[order.order_id] = order
        self.by_link[order.link_id] = order
        self._relock(order)
        self._enter(order)
        return order

    def _needs(self, order: Order, inst: Instrument) -> tuple[str, Decimal]:
        if order.side == "Sell":
            if order.in_quote:
                quote = self.quotes.get(order.symbol)
                return inst.base, order.qty / quote.bid if quote and quote.bid else Decimal(0)
            return inst.base, order.qty
        if order.in_quote:
            return inst.quote, order.qty
        if order.order_type == "Market":
            quote = self.quotes.get(order.symbol)
            return inst.quote, order.qty * quote.ask if quote else Decimal(0)
        return inst.quote, order.qty * order.price

    def _enter(self, order: Order):
        """What a new order does at once: take what crosses, then rest or end."""
        quote = self.quotes.get(order.symbol)
        crosses = quote is not None and self._crosses(order, quote)
        if order.tif == "PostOnly" and crosses:
            self._end(order, "EC_PostOnlyWillTakeLiquidity")
            return
        if order.tif == "FOK" and not self._can_fill_all(order, quote):
            self._end(order, "EC_FOKOrderNotFullyFilled")
            return
        if crosses:
            self._take(order, maker=False)
        if order.is_open and (order.order_type == "Market" or order.tif in ("IOC", "FOK")):
            self._end(order, "EC_NoImmediateQtyToFill" if order.cum_qty == 0 else "EC_NoError")

    @staticmethod
    def _crosses(order: Order, quote: Quote) -> bool:
        if order.side == "Buy":
            return quote.ask > 0 and (order.order_type == "Market" or order.price >= quote.ask)
        return quote.bid > 0 and (order.order_type == "Market" or order.price <= quote.bid)

    def _can_fill_all(self, order: Order, quote: Quote | None) -> bool:
        if quote is None or not self._crosses(order, quote):
            return False
        size = quote.ask_size if order.side == "Buy" else quote.bid_size
        return size is None or self._base_left(order, quote) <= size

    def _base_left(self, order: Order, quote: Quote) -> Decimal:
        """The base quantity still to fill (a quote-unit MARKET order converts at the ask)."""
        if not order.in_quote:
            return order.leaves
        inst = self.instruments[order.symbol]
        px = quote.ask if order.side == "Buy" else quote.bid
        return (order.leaves / px).quantize(inst.base_precision, rounding=ROUND_DOWN)

    def _take(self, order: Order, *, maker: bool):
        """Fill what the current quote allows: as taker at the quote, as maker at the limit."""
        quote = self.quotes.get(order.symbol)
        if quote is None or not self._crosses(order, quote):
            return
        buy = order.side == "Buy"
        size = quote.ask_size if buy else quote.bid_size
        qty = self._base_left(order, quote)
        if size is not None:
            qty = min(qty, size)
        if qty <= 0:
            return
        px = order.price if maker else (quote.ask if buy else quote.bid)
        self.execute(order, qty, px, is_maker=maker)
        if size is not None:
            if buy:
                quote.ask_size = size - qty
            else:
                quote.bid_size = size - qty

    def execute(self, order: Order, qty: Decimal, price: Decimal, *, is_maker: bool):
        """Book one fill: the order's totals, the balances (fee included), an execution."""
        if not order.is_open:
            raise ValueError(f"order {order.link_id} is {order.status}: nothing left to fill")
        inst = self.instruments[order.symbol]
        value = qty * price
        left = order.leaves - (value if order.in_quote else qty)
        if left < 0:
            raise ValueError(f"fill of {qty} exceeds what order {order.link_id} has left")
        rate = self.fee_maker if is_maker else self.fee_taker
        base, quote = self.balance(inst.base), self.balance(inst.quote)
        if self.fee_coin:  # in the fee token, at its last price in the quote coin
            px = self.quotes[f"{self.fee_coin}{inst.quote}"].last
            fee = (value * rate / px).quantize(Decimal("1e-8"), rounding=ROUND_UP)
            fee_coin = self.fee_coin
            self.balance(fee_coin).total -= fee
            quote.total += -value if order.side == "Buy" else value
            base.total += qty if order.side == "Buy" else -qty
        elif order.side == "Buy":
            fee, fee_coin = qty * rate, inst.base
            quote.total -= value
            base.total += qty - fee
        else:
            fee, fee_coin = value * rate, inst.quote
            base.total -= qty
            quote.total += value - fee
        order.cum_qty += qty
        order.cum_value += value
        order.cum_fee += fee
        order.fee_coin = fee_coin
        order.updated = now_ms()
        if left == 0 or (order.in_quote and self._quote_dust(order, left, price)):
            order.status = "Filled"
            order.cancel_pending = False
        else:
            order.status = "PartiallyFilled"
        self._relock(order)
        self.executions.append(Execution(
            str(next(self._exec_ids)), order, qty, price, fee, fee_coin, rate, is_maker,
            order.updated, order.leaves, next(self._seq)))

    def late(self, order: Order, qty: Decimal, price: Decimal, *, is_maker: bool):
        """A trade of an ended order that the venue reports after its end (it matched as
        the order was canceled): booked like any fill, and the order stays ended."""
        if order.is_open:
            raise ValueError(f"order {order.link_id} is open: fill it the ordinary way")
        order.status = "New"
        self.execute(order, qty, price, is_maker=is_maker)
        if order.status != "Filled":  # what was not filled stays canceled
            order.status = "PartiallyFilledCanceled"
            self._relock(order)

    def _quote_dust(self, order: Order, left: Decimal, price: Decimal) -> bool:
        """A quote-unit order is done when what is left cannot buy one base step."""
        return left < self.instruments[order.symbol].base_precision * price

    def cancel(self, order: Order) -> Order:
        if not order.is_open or order.cancel_pending:
            raise VenueError(170213, "Order does not exist.")
        if self.defer_cancels:
            order.cancel_pending = True
            return order
        self._end(order, "EC_PerCancelRequest", cancel_type="CancelByUser")
        return order

    def finish_cancels(self) -> list[Order]:
        """End every acknowledged cancel that fills have not overtaken."""
        done = []
        for order in self.orders.values():
            if order.cancel_pending:
                order.cancel_pending = False
                if order.is_open:
                    self._end(order, "EC_PerCancelRequest", cancel_type="CancelByUser")
                    done.append(order)
        return done

    def _end(self, order: Order, reason: str, *, cancel_type: str = "UNKNOWN"):
        order.status = "PartiallyFilledCanceled" if order.cum_qty > 0 else "Cancelled"
        order.reject_reason = reason
        order.cancel_type = cancel_type
        order.updated = now_ms()
        self._relock(order)

    def _relock(self, order: Order):
        """Hold what the open rest of the order may spend: quote for a BUY, base for a SELL."""
        inst = self.instruments[order.symbol]
        if not order.is_open or order.order_type == "Market":
            want = Decimal(0)
        elif order.side == "Buy":
            want = order.leaves * order.price
        else:
            want = order.leaves
        coin = inst.quote if order.side == "Buy" else inst.base
        self.balance(coin).locked += want - order.locked
        order.locked = want


def _size(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _decimal(value, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except Exception:
        raise VenueError(10001, f"params error: {name} invalid") from None
    if not number.is_finite() or number <= 0:
        raise VenueError(10001, f"params error: {name} invalid")
    return number
