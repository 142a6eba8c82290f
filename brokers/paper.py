"""`PaperBroker`: a simulated broker account driven by the market simulator's ticks.

Fill rules (what a backtest of a strategy on it assumes):

- An order fills on ticks that arrive after it was submitted, never on the price it was
  decided on. A MARKET order fills at the tick's ask (BUY) or bid (SELL), moved against
  it by ``slippage_bps``, and pays the taker fee.
- A LIMIT order fills when the market crosses its price (ask <= limit for a BUY, bid >=
  limit for a SELL) at the limit or the better tick price, and pays the maker fee.
- No entry fills above its ``max_price``, the price capflow reserved its capital for:
  a MARKET entry whose fill price (slippage included) would be above it fills nothing
  and its remainder is canceled ("beyond the reserved price"), like a limit order that
  is immediate-or-cancel at that price. A LIMIT entry that crosses the market on the
  first tick it meets (it was marketable when it came) fills at the tick's price, or,
  above its ``max_price`` (a SELL priced before the market had a price), is canceled;
  one that rested first fills at most at its ``max_price`` (never past its limit).
- A STOP / STOP_LIMIT waits until a tick touches its trigger (the ask at or above it for
  a BUY, the bid at or below it for a SELL; `OrderTriggered`), then is, from that same
  tick, a MARKET / a LIMIT at its price: a gap through a STOP's trigger fills at the
  tick's price (at most at its ``max_price``). A restored order that was touched trades
  at once.
- Time in force: IOC fills what its first tradable tick allows and cancels the rest
  (``ioc_remainder``); FOK fills all on that tick or cancels all (``fok_unfilled``); GTD
  is canceled (``expired``) once the clock reaches its ``expire_at``, on a tick before
  it fills or on `step` (the account's timer), and at `restore` when it passed while
  the server was down. An IOC restored with a fill has had its tick: its rest is
  canceled at `restore`.
- An order filled in pieces pays the fee it would pay in one: each fill is charged the
  rounded-up fee of everything filled so far, less what was charged before.
- Each tick offers ``tick.liquidity`` on each side of a symbol, shared by the orders in
  the order they came: a larger order fills partly over several ticks.
- A position carries its take-profit and stop-loss as one OCO pair, checked on every tick
  of its symbol from the tick after it opened: a long exits at the bid, a short at the
  ask -- the tick's price, so a gap through a level fills beyond it, never at it. The
  take-profit pays the maker fee, the stop-loss and a manual close the taker fee.
  Exits take the whole position in one tick (they are not limited by liquidity).
- A trailing stop (actors/model/trailing.py) moves on each tick of its symbol from the
  tick after the position opened, by the exit side's price (a long's bid, a short's
  ask; `TrailMoved`); a later tick at or beyond its stop exits the position at that
  tick's price with the reason ``trail``, paying the taker fee. It is checked before
  the stop-loss and the take-profit.
- When a position exits while its entry order is still working, the rest of the entry
  order is canceled, and so are its scale-ins: those working then, and one that arrives
  after the exit (``position closed``).

Settings (``[brokers.accounts.<id>.settings]``): ``taker_fee`` (default 0.0004),
``maker_fee`` (0.0002), ``slippage_bps`` (1), ``fail_connects`` (0: connection attempts
that fail before one succeeds, to rehearse outages). With ``market_data`` (a ccxt exchange
id) the account's ticks are that venue's public tickers instead of the simulator's, and
its entries obey the venue's instrument rules: `capflow.brokers.paper_venue`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from capflow.actors.model.money import ZERO, parse_decimal, round_down, round_up
from capflow.actors.model.order_types import (
    EXPIRED,
    FOK_UNFILLED,
    IOC_REMAINDER,
    TRIGGERED_TYPES,
    touched,
)
from capflow.actors.model.trailing import TRAIL, Trail, advance, hit
from capflow.brokers.base import BrokerAdapter
from capflow.brokers.events import (
    AccountInfo,
    BrokerOrder,
    BrokerPosition,
    EntryFilled,
    OrderAccepted,
    OrderCanceled,
    OrderTriggered,
    PositionExited,
    TrailMoved,
)

_BPS = Decimal(10000)
#: `set_stops` without a trail: the position's trail stays as it is
KEEP = object()
#: the paper broker's own settings
PAPER_SETTINGS = frozenset({"taker_fee", "maker_fee", "slippage_bps", "fail_connects"})
#: how many exited position ids the broker remembers, to refuse a scale-in of one that
#: arrives after the exit (it follows its booking at once: a few suffice)
EXITED_KEPT = 1000


@dataclass
class _Working:
    order: BrokerOrder
    remaining: Decimal
    #: whether it has met a tick yet: a LIMIT that crosses on its first tick takes the
    #: market's price (it was marketable when it came), later ones rest at their limit
    seen: bool = False
    #: its fees so far, exactly and as charged (each fill charges the rounded-up total
    #: less what was charged: an order filled in pieces pays what it would in one)
    fee_exact: Decimal = ZERO
    fee_charged: Decimal = ZERO
    #: whether it trades: a STOP / STOP_LIMIT only once a tick touched its trigger
    armed: bool = True


def _places(price: Decimal) -> int:
    return max(0, -price.as_tuple().exponent)


class PaperBroker(BrokerAdapter):
    supports_trailing = True

    @classmethod
    def variant(cls, config):
        """On a venue's market data (``market_data`` set): `PaperVenueBroker`."""
        if "market_data" in config.settings:
            from capflow.brokers.paper_venue import PaperVenueBroker

            return PaperVenueBroker
        return cls

    def init(self) -> None:
        s = self.config.settings
        self.taker_fee = parse_decimal(s.get("taker_fee", "0.0004"), "taker_fee",
                                       allow_zero=True)
        self.maker_fee = parse_decimal(s.get("maker_fee", "0.0002"), "maker_fee",
                                       allow_zero=True)
        self.slippage = parse_decimal(s.get("slippage_bps", "1"), "slippage_bps",
                                      allow_zero=True) / _BPS
        self._fail_connects = int(s.get("fail_connects", 0))
        self.cash = self.config.initial_cash
        self.fees_paid = ZERO
        self.working: dict[str, _Working] = {}
        #: the open positions; a change replaces the record (`_put`)
        self.positions: dict[str, BrokerPosition] = {}
        self.last: dict = {}
        # per symbol, in arrival order: the working orders, and the positions a tick
        # can close (with a take-profit or stop-loss, or a close requested), so a tick
        # costs what it can touch, not what is open
        self._book: dict[str, dict[str, _Working]] = {}
        self._armed: dict[str, dict[str, BrokerPosition]] = {}
        #: the GTD orders' (expire_at, order_id), soonest first
        self._expiry: list = []
        #: partial exits asked for (`reduce_position`): position id -> quantity, filled
        #: at market on the next tick (not kept across a restart: never re-asked)
        self._reducing: dict[str, Decimal] = {}
        #: the ids of the positions exited most recently (`EXITED_KEPT`), oldest first
        self._exited: dict[str, None] = {}

    # -- connection -------------------------------------------------------------------

    def connect(self) -> None:
        if self._fail_connects > 0:
            self._fail_connects -= 1
            raise ConnectionError("paper broker: simulated connection failure")

    # -- account ----------------------------------------------------------------------

    def account_info(self) -> AccountInfo:
        margin = sum((p.qty * p.entry_price for p in self.positions.values()), ZERO)
        unrealized = ZERO
        for p in self.positions.values():
            tick = self.last.get(p.symbol)
            if tick is not None:
                mark = tick.bid if p.side == "BUY" else tick.ask
                diff = (mark - p.entry_price) * p.qty
                unrealized += diff if p.side == "BUY" else -diff
        working = sum((w.remaining * (w.order.price or w.order.max_price or ZERO)
                       for w in self.working.values()), ZERO)
        places = self.money_places
        return AccountInfo(currency=self.config.currency, cash=self.cash,
                           equity=round_down(self.cash + unrealized, places),
                           margin_used=round_up(margin, places),
                           free_cash=round_down(self.cash - margin - working, places))

    def portfolio(self) -> list[BrokerPosition]:
        return list(self.positions.values())

    # -- orders -----------------------------------------------------------------------

    def _work(self, order: BrokerOrder) -> None:
        # a stop that was touched (restored) trades at once; others wait for the trigger
        armed = (order.type not in TRIGGERED_TYPES or order.triggered
                 or order.filled_qty > 0)
        w = _Working(order, order.qty - order.filled_qty, armed=armed)
        self.working[order.order_id] = w
        self._book.setdefault(order.symbol, {})[order.order_id] = w
        if order.expire_at is not None:
            heapq.heappush(self._expiry, (order.expire_at, order.order_id))

    def _expire(self) -> None:
        """Cancel the GTD orders whose time has come (``expired``)."""
        heap, now = self._expiry, self.clock.now()
        while heap and heap[0][0] <= now:
            _, order_id = heapq.heappop(heap)
            if order_id in self.working:
                self.cancel_order(order_id, reason=EXPIRED)

    def step(self) -> None:
        super().step()
        self._expire()

    def _unwork(self, order_id: str) -> _Working | None:
        w = self.working.pop(order_id, None)
        if w is not None:
            self._book[w.order.symbol].pop(order_id, None)
        return w

    def _put(self, p: BrokerPosition) -> None:
        """Keep `p` as the position's record (new, or a changed copy of the one before)."""
        self.positions[p.position_id] = p
        armed = self._armed.setdefault(p.symbol, {})
        if (p.tp_price is not None or p.sl_price is not None or p.closing is not None
                or p.trail is not None or p.position_id in self._reducing):
            armed[p.position_id] = p
        else:
            armed.pop(p.position_id, None)

    def submit_order(self, order: BrokerOrder) -> None:
        self._work(order)
        self.emit(OrderAccepted(account_id=self.account_id, ts=self.clock.now(),
                                order_id=order.order_id, profile_id=order.profile_id))
        if order.position_id in self._exited:
            # a scale-in of a position that exited after the ledger took the order: it
            # adds to nothing (as the ones working when it exited); a fill would reopen
            # the closed position here, which the ledger never does
            self.cancel_order(order.order_id, reason="position closed")

    def cancel_order(self, order_id: str, reason: str = "canceled") -> bool:
        w = self._unwork(order_id)
        if w is None:
            return False
        self.emit(OrderCanceled(account_id=self.account_id, ts=self.clock.now(),
                                order_id=order_id, profile_id=w.order.profile_id,
                                reason=reason))
        return True

    def amend_order(self, order_id: str, qty: Decimal, price: Decimal | None,
                    trigger_price: Decimal | None, max_price: Decimal | None) -> bool:
        """Amend a working order in place. Its place in the symbol's queue (orders fill
        in arrival order when liquidity is short) is kept when only its quantity goes
        down; a new price, trigger or a larger quantity sends it to the back, as a new
        order. A new price is met like a new order's (marketable now: the market's
        price on the next tick)."""
        w = self.working.get(order_id)
        if w is None:
            return False
        o = w.order
        filled = o.qty - w.remaining
        requeue = qty > o.qty or (price, trigger_price) != (o.price, o.trigger_price)
        w.order = msgspec.structs.replace(o, qty=qty, price=price, max_price=max_price,
                                          trigger_price=trigger_price)
        w.remaining = qty - filled
        if requeue:
            book = self._book[o.symbol]
            book[order_id] = book.pop(order_id)
            w.seen = w.seen and price == o.price
        return True

    def close_position(self, position_id: str, reason: str = "manual") -> bool:
        p = self.positions.get(position_id)
        if p is None:
            return False
        self._put(msgspec.structs.replace(p, closing=p.closing or reason))
        return True

    def reduce_position(self, position_id: str, qty: Decimal) -> bool:
        """Exit `qty` of the position at market on the next tick, unless its take-profit
        or stop-loss closes all of it on that tick first (then the reduce is moot)."""
        p = self.positions.get(position_id)
        if p is None or p.closing is not None or position_id in self._reducing:
            return False
        if qty >= p.qty:  # all of it: a close
            return self.close_position(position_id, "manual")
        self._reducing[position_id] = qty
        self._put(p)
        return True

    def set_stops(self, position_id: str, tp_price: Decimal | None,
                  sl_price: Decimal | None, trail: Trail | object | None = KEEP) -> bool:
        """Without `trail`, the position's trail stays as it is (where it has moved)."""
        p = self.positions.get(position_id)
        if p is None:
            return False
        self._put(msgspec.structs.replace(p, tp_price=tp_price, sl_price=sl_price,
                                          trail=p.trail if trail is KEEP else trail))
        return True

    def restore(self, orders: Iterable[BrokerOrder],
                positions: Iterable[BrokerPosition]) -> None:
        for p in positions:
            self._put(p)
        for o in orders:
            self._work(o)
            p = self.positions.get(o.position_id)
            if p is not None:
                self._put(msgspec.structs.replace(p, order_id=o.order_id))
            if o.time_in_force == "IOC" and o.filled_qty > 0:
                # it traded on its tick; the cancel of its rest was lost (a kill between)
                self.cancel_order(o.order_id, reason=IOC_REMAINDER)
        self._expire()  # what expired while the server was down ends now

    # -- the market -------------------------------------------------------------------

    def on_tick(self, tick) -> None:
        self.last[tick.symbol] = tick
        if not self.connected:
            return
        self._expire()  # an order past its time never fills
        self._check_exits(tick)
        self._work_orders(tick)

    def _check_exits(self, tick) -> None:
        armed = self._armed.get(tick.symbol)
        if not armed:
            return
        for p in list(armed.values()):
            long = p.side == "BUY"
            price = tick.bid if long else tick.ask
            fee_rate = self.taker_fee
            if p.closing is not None:
                reason = p.closing
                places = _places(price)
                price = (round_down(price * (1 - self.slippage), places) if long
                         else round_up(price * (1 + self.slippage), places))
            elif hit(p.side, p.trail, price):
                reason = TRAIL
            elif p.sl_price is not None and (price <= p.sl_price if long
                                             else price >= p.sl_price):
                reason = "sl"
            elif p.tp_price is not None and (price >= p.tp_price if long
                                             else price <= p.tp_price):
                reason, fee_rate = "tp", self.maker_fee
            elif p.position_id in self._reducing:
                places = _places(price)
                price = (round_down(price * (1 - self.slippage), places) if long
                         else round_up(price * (1 + self.slippage), places))
                self._exit_part(p, self._reducing.pop(p.position_id), price)
                continue
            else:
                if p.trail is not None:
                    self._trail(p, price)
                continue
            self._exit(p, price, fee_rate, reason)

    def _trail(self, p: BrokerPosition, price: Decimal) -> None:
        """Move a position's trailing stop by a tick's exit price (`TrailMoved`)."""
        trail = advance(p.side, p.trail, price)
        if trail is p.trail:
            return
        self._put(msgspec.structs.replace(p, trail=trail))
        self.emit(TrailMoved(account_id=self.account_id, ts=self.clock.now(),
                             position_id=p.position_id, profile_id=p.profile_id,
                             trail=trail))

    def _exit(self, p: BrokerPosition, price: Decimal, fee_rate: Decimal, reason: str) -> None:
        fee = round_up(p.qty * price * fee_rate, self.money_places)
        pnl = (price - p.entry_price) * p.qty
        self.cash += (pnl if p.side == "BUY" else -pnl) - fee
        self.fees_paid += fee
        del self.positions[p.position_id]
        self._armed[p.symbol].pop(p.position_id, None)
        self._reducing.pop(p.position_id, None)
        self._exited[p.position_id] = None
        if len(self._exited) > EXITED_KEPT:
            del self._exited[next(iter(self._exited))]
        self.emit(PositionExited(account_id=self.account_id, ts=self.clock.now(),
                                 position_id=p.position_id, profile_id=p.profile_id,
                                 fill_id=self.new_id("fill"), qty=p.qty, price=price,
                                 fee=fee, reason=reason))
        for w in list(self._book.get(p.symbol, {}).values()):  # its entry, its scale-ins
            if w.order.position_id == p.position_id:
                self.cancel_order(w.order.order_id, reason="position closed")

    def _exit_part(self, p: BrokerPosition, qty: Decimal, price: Decimal) -> None:
        """A partial exit at market (`reduce_position`): the rest stays open with its
        stops."""
        fee = round_up(qty * price * self.taker_fee, self.money_places)
        pnl = (price - p.entry_price) * qty
        self.cash += (pnl if p.side == "BUY" else -pnl) - fee
        self.fees_paid += fee
        self._put(msgspec.structs.replace(p, qty=p.qty - qty, exited_qty=p.exited_qty + qty))
        self.emit(PositionExited(account_id=self.account_id, ts=self.clock.now(),
                                 position_id=p.position_id, profile_id=p.profile_id,
                                 fill_id=self.new_id("fill"), qty=qty, price=price,
                                 fee=fee, reason="manual"))

    def _work_orders(self, tick) -> None:
        book = self._book.get(tick.symbol)
        if not book:
            return
        room = {"BUY": tick.liquidity, "SELL": tick.liquidity}
        for w in list(book.values()):
            o = w.order
            if not w.armed:
                if not touched(o.side, o.trigger_price, tick.bid, tick.ask):
                    continue
                w.armed = True  # now a market (STOP) or a limit (STOP_LIMIT) order
                self.emit(OrderTriggered(account_id=self.account_id, ts=self.clock.now(),
                                         order_id=o.order_id, profile_id=o.profile_id,
                                         price=tick.ask if o.side == "BUY" else tick.bid))
            tif = o.time_in_force
            if room[o.side] <= 0 and tif not in ("IOC", "FOK"):
                continue
            first, w.seen = not w.seen, True
            priced = self._price(o, tick, first)
            if isinstance(priced, str):
                self.cancel_order(o.order_id, reason=priced)
                continue
            qty = min(w.remaining, room[o.side])
            if priced is None or qty <= 0 or (tif == "FOK" and qty < w.remaining):
                if tif in ("IOC", "FOK"):  # nothing of it trades now: nothing ever will
                    self.cancel_order(o.order_id, reason=(
                        IOC_REMAINDER if tif == "IOC" else FOK_UNFILLED))
                continue
            price, fee_rate, liquidity = priced
            room[o.side] -= qty
            w.remaining -= qty
            if w.remaining <= 0:
                self._unwork(o.order_id)
            w.fee_exact += qty * price * fee_rate
            fee = round_up(w.fee_exact, self.money_places) - w.fee_charged
            w.fee_charged += fee
            self._entry(o, qty, price, fee, liquidity)
            if tif == "IOC" and w.remaining > 0:
                self.cancel_order(o.order_id, reason=IOC_REMAINDER)

    def _price(self, o: BrokerOrder, tick, first: bool
               ) -> tuple[Decimal, Decimal, str] | str | None:
        """What an (armed) order fills at on `tick`: (price, fee rate, liquidity); None
        when the market does not cross its limit; a reason to cancel it when the price
        is beyond what its capital covers."""
        if o.type in ("LIMIT", "STOP_LIMIT"):
            crossed = tick.ask <= o.price if o.side == "BUY" else tick.bid >= o.price
            if not crossed:
                return None
            price = min(o.price, tick.ask) if o.side == "BUY" else max(o.price, tick.bid)
            if o.max_price is not None and price > o.max_price:
                if first:  # marketable when it came, at a price its capital does not
                    # cover (a SELL priced before the market had one): nothing fills
                    return f"price {price} is beyond the reserved price {o.max_price}"
                price = max(o.max_price, o.price)  # resting: at most what it covers
            return price, self.maker_fee, "MAKER"
        places = _places(tick.ask)  # MARKET, and a STOP once touched (a gap: the tick's)
        price = (round_up(tick.ask * (1 + self.slippage), places) if o.side == "BUY"
                 else round_down(tick.bid * (1 - self.slippage), places))
        if o.max_price is not None and price > o.max_price:
            return f"price {price} is beyond the reserved price {o.max_price}"
        return price, self.taker_fee, "TAKER"

    def _entry(self, o: BrokerOrder, qty: Decimal, price: Decimal, fee: Decimal,
               liquidity: str) -> None:
        self.cash -= fee
        self.fees_paid += fee
        p = self.positions.get(o.position_id)
        if p is None:
            self._put(BrokerPosition(position_id=o.position_id, profile_id=o.profile_id,
                                     symbol=o.symbol, side=o.side, qty=qty,
                                     entry_price=price, tp_price=o.tp_price,
                                     sl_price=o.sl_price, order_id=o.order_id,
                                     trail=o.trail))
        else:
            self._put(msgspec.structs.replace(  # a scale-in's own stops replace the old
                p, qty=p.qty + qty,
                entry_price=(p.entry_price * p.qty + price * qty) / (p.qty + qty),
                tp_price=p.tp_price if o.tp_price is None else o.tp_price,
                sl_price=p.sl_price if o.sl_price is None else o.sl_price))
        self.emit(EntryFilled(account_id=self.account_id, ts=self.clock.now(),
                              order_id=o.order_id, profile_id=o.profile_id,
                              position_id=o.position_id, fill_id=self.new_id("fill"),
                              qty=qty, price=price, fee=fee, liquidity=liquidity))
