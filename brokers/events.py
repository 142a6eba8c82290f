"""What a broker adapter reports and describes (`brokers.base`): the records of its orders,
positions and account, the events it emits (fills, exits, cancels, connection changes),
and the price reports of an adapter that has its venue's prices."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from capflow.actors.model.money import ZERO
from capflow.actors.model.trailing import Trail

# -- records --------------------------------------------------------------------------


class BrokerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as an adapter sees it (capflow symbol; translate at the edge)."""

    order_id: str
    profile_id: str
    symbol: str
    side: str  # BUY or SELL
    type: str  # MARKET, LIMIT, STOP or STOP_LIMIT
    qty: Decimal
    price: Decimal | None = None
    position_id: str
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    filled_qty: Decimal = ZERO
    #: the highest price capflow reserved the order's capital for: never fill it above
    #: this (a MARKET order is then a limit at this price; a SELL limit fills at most
    #: here). None: no such bound (orders recorded before it existed)
    max_price: Decimal | None = None
    #: a STOP / STOP_LIMIT order's trigger; its time in force and a GTD order's expiry
    #: (actors/model/order_types.py)
    trigger_price: Decimal | None = None
    time_in_force: str = "GTC"
    expire_at: datetime | None = None
    #: whether its trigger was touched already (a restored stop that was trades at once)
    triggered: bool = False
    #: the trailing stop its position gets (actors/model/trailing.py)
    trail: Trail | None = None


class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True):
    """An open position as an adapter sees it (and keeps it: a change is a new record)."""

    position_id: str
    profile_id: str
    symbol: str
    side: str
    qty: Decimal
    #: the average price of its entry fills
    entry_price: Decimal
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    #: a close capflow asked for and that has not filled yet ("manual")
    closing: str | None = None
    #: the entry order that opened it (None: not known, e.g. restored without it); its
    #: rest is canceled when the position exits while it is still working
    order_id: str | None = None
    #: how much of it exits booked already (restored: a live venue skips those fills
    #: when it finds the exit orders again)
    exited_qty: Decimal = ZERO
    #: its trailing stop and where it is (actors/model/trailing.py)
    trail: Trail | None = None


class AccountInfo(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    cash: Decimal
    equity: Decimal
    margin_used: Decimal
    #: cash not tied up in positions or working orders
    free_cash: Decimal


# -- events ---------------------------------------------------------------------------


class BrokerEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    account_id: str
    ts: datetime


class Connected(BrokerEvent, frozen=True, tag="Connected"):
    attempt: int


class ConnectionFailed(BrokerEvent, frozen=True, tag="ConnectionFailed"):
    attempt: int
    error: str
    retry_in_s: float


class Disconnected(BrokerEvent, frozen=True, tag="Disconnected"):
    """The adapter gave up connecting: orders are refused until it is restarted."""

    reason: str
    attempts: int


class OrderAccepted(BrokerEvent, frozen=True, tag="OrderAccepted"):
    order_id: str
    profile_id: str


class EntryFilled(BrokerEvent, frozen=True, tag="OrderFilled"):
    """An entry order (partly) filled, as the broker reports it (the ledger books it as
    its own `OrderFilled` event; this one keeps that name on the broker topic)."""

    order_id: str
    profile_id: str
    position_id: str
    fill_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    liquidity: str  # MAKER or TAKER
    #: the part of `qty` the venue kept as its fee (a spot buy charged in the coin
    #: bought): the position holds `qty - fee_qty`; `fee` is then 0
    fee_qty: Decimal = ZERO
    #: a fee charged in a third coin (a fee token): its coin and quantity; `fee` is
    #: then its value in the account's money at the venue's price (0 without one)
    fee_coin: str | None = None
    fee_coin_qty: Decimal = ZERO


class PositionExited(BrokerEvent, frozen=True, tag="PositionExited"):
    """A position (partly) closed: by its take-profit, its stop-loss, or by hand."""

    position_id: str
    profile_id: str
    fill_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    reason: str  # tp, sl or manual
    fee_coin: str | None = None  # as `EntryFilled`'s
    fee_coin_qty: Decimal = ZERO


class OrderTriggered(BrokerEvent, frozen=True, tag="OrderTriggered"):
    """A STOP / STOP_LIMIT order's trigger was touched by the market at `price`."""

    order_id: str
    profile_id: str
    price: Decimal


class TrailMoved(BrokerEvent, frozen=True, tag="TrailMoved"):
    """A position's trailing stop moved: the trail as it is now (`Trail.best`, the best
    exit price since it activated, and `Trail.stop`)."""

    position_id: str
    profile_id: str
    trail: Trail


class OrderCanceled(BrokerEvent, frozen=True, tag="OrderCanceled"):
    order_id: str
    profile_id: str
    reason: str


class OrderRejected(BrokerEvent, frozen=True, tag="OrderRejected"):
    order_id: str
    profile_id: str
    reason: str


class FillUnbookable(msgspec.Struct, frozen=True, kw_only=True):
    """The venue reported a fill that makes no sense (a quantity, price or fee that is
    not a number, beyond its order, past its limit): it happened, as far as anyone can
    tell, but nothing of it can be booked. The account manager alerts
    (``fill_unbooked``) and sets the account REDUCE_ONLY, as for a fill its ledger
    refused. Not an event of the broker topic."""

    account_id: str
    ts: datetime
    profile_id: str
    fill_id: str
    reason: str


class PriceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter with its venue's prices reports through `emit` besides its
    events: not broker events (they are not sent on the ``broker`` topic)."""

    account_id: str
    ts: datetime


class VenueTicks(PriceReport, frozen=True):
    """The venue's quotes of the account's symbols (`capflow.actors.model.ticks.Tick`,
    capflow symbols): capflow prices those symbols by them, not by its simulator; the
    ticks go out on the ``tick.<symbol>`` topics as the simulator's do."""

    ticks: list


class PricesStale(PriceReport, frozen=True):
    """The venue's prices stopped arriving (`stale`), or arrive again (not `stale`):
    entries on the account are refused meanwhile (``STALE_PRICES``); `unwatched` lists
    the positions whose take-profit / stop-loss the adapter cannot watch meanwhile."""

    stale: bool
    age_s: float | None = None
    unwatched: list[str] = []
