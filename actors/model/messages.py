"""Records, commands and events of the capital ledger.

Records are immutable snapshots of one object (a reservation, an order's capital, a
position's capital, a fill). Commands are imperative and go to a `LedgerActor`; events
are past tense, carry the records they changed, and are what the journal stores.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model.allocation import Externals
from capflow.actors.model.errors import Denial
from capflow.actors.model.money import ZERO
from capflow.actors.model.orders import OrderSpec, Signal, SignalPolicy
from capflow.actors.model.risk import Trip
from capflow.actors.model.trade_records import Fill, SignalRecord

# -- records --------------------------------------------------------------------------

ACTIVE, RELEASED, EXPIRED, CONSUMED = "ACTIVE", "RELEASED", "EXPIRED", "CONSUMED"
ORDER_OPEN_STATES = frozenset({"OPEN", "PARTIALLY_FILLED"})
ORDER_END_STATES = frozenset({"CANCELED", "REJECTED", "EXPIRED"})
TRADING_STATES = ("ACTIVE", "REDUCE_ONLY", "HALTED")


def available_of(b: Any) -> Decimal:
    """The one formula of `available` (docs/ledger.md), of anything holding the six
    buckets: a `Buckets`, a `Ledger`."""
    return (b.allocated + b.realized_pnl - b.fees - b.held
            - b.reserved_for_orders - b.reserved_for_positions)


class Buckets(msgspec.Struct, frozen=True):
    allocated: Decimal = ZERO
    held: Decimal = ZERO
    reserved_for_orders: Decimal = ZERO
    reserved_for_positions: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO

    @property
    def available(self) -> Decimal:
        return available_of(self)

    def diff(self, other: Buckets) -> dict[str, tuple[Decimal, Decimal]]:
        return {f: (getattr(self, f), getattr(other, f)) for f in self.__struct_fields__
                if getattr(self, f) != getattr(other, f)}


class Profile(msgspec.Struct, frozen=True):
    profile_id: str
    currency: str
    account_id: str | None
    risk_profile: str | None
    state: str
    state_reason: str
    state_by: str
    state_at: datetime
    created_at: datetime


class Transfer(msgspec.Struct, frozen=True):
    transfer_id: str
    client_request_id: str
    amount: Decimal  # positive: deposit, negative: withdrawal
    ts: datetime


class Reservation(msgspec.Struct, frozen=True):
    """Capital held for a client before it becomes an order (a reservation)."""

    reservation_id: str
    client_request_id: str
    symbol: str
    amount: Decimal
    ttl_s: int
    created_at: datetime
    expires_at: datetime
    status: str = ACTIVE
    ended_at: datetime | None = None
    end_reason: str | None = None


class OrderCapital(msgspec.Struct, frozen=True):
    """The ledger's view of an order: how much capital its unfilled part still holds."""

    order_id: str
    symbol: str
    side: str
    qty: Decimal
    filled_qty: Decimal
    reserved: Decimal
    status: str
    reservation_id: str | None
    created_at: datetime
    updated_at: datetime
    # -- what the order management system adds (all optional for bare capital orders)
    account_id: str | None = None
    client_order_id: str | None = None
    type: str = "MARKET"
    #: the limit price (LIMIT orders)
    price: Decimal | None = None
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    #: the position its fills open (or add to)
    position_id: str | None = None
    signal_id: str | None = None
    strategy: str | None = None
    exchange: str | None = None
    #: volume-weighted price of its fills so far
    avg_price: Decimal | None = None
    #: the highest price its capital covers: the broker never fills it above this
    max_price: Decimal | None = None
    #: what its fills cost exactly (the sum of qty * price, unrounded): each fill books
    #: the rounded total less what the fills before booked, so an order filled in pieces
    #: costs what it would in one (None: recorded before this was kept)
    filled_value: Decimal | None = None
    #: a STOP / STOP_LIMIT order's trigger (order_types.py)
    trigger_price: Decimal | None = None
    #: GTC, IOC, FOK or GTD; a GTD order expires at `expire_at` (kept with the order, so
    #: one whose time passed while the server was down expires at start)
    time_in_force: str = "GTC"
    expire_at: datetime | None = None
    #: why it ended, when a broker said (``expired``, ``ioc_remainder``, ``fok_unfilled``)
    end_reason: str | None = None
    #: when a tick touched a STOP / STOP_LIMIT order's trigger (None: not yet, or no stop)
    triggered_at: datetime | None = None
    #: the trailing stop its position gets (actors/model/trailing.py)
    trail_amount: Decimal | None = None
    trail_pct: Decimal | None = None
    trail_activation: Decimal | None = None


class PositionCapital(msgspec.Struct, frozen=True):
    """The ledger's view of a position: its remaining cost basis, reserved."""

    position_id: str
    symbol: str
    side: str
    qty_open: Decimal
    qty_total: Decimal
    entry_notional: Decimal
    reserved: Decimal
    realized_pnl: Decimal
    fees: Decimal
    status: str
    opened_at: datetime
    closed_at: datetime | None = None
    account_id: str | None = None
    order_id: str | None = None
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    strategy: str | None = None
    exchange: str | None = None
    #: volume-weighted entry and exit prices
    entry_price: Decimal | None = None
    exit_price: Decimal | None = None
    #: proceeds of the exits so far
    exit_notional: Decimal = ZERO
    #: why it was closed: "tp", "sl", "trail", "manual" or "flatten"
    close_reason: str | None = None
    #: a close asked for and not filled yet ("manual"): kept so that a restart asks the
    #: broker again
    close_requested: str | None = None
    #: its trailing stop (actors/model/trailing.py): how it trails, its best price and
    #: stop so far (None until it activated)
    trail_amount: Decimal | None = None
    trail_pct: Decimal | None = None
    trail_activation: Decimal | None = None
    trail_best: Decimal | None = None
    trail_stop: Decimal | None = None


# -- events ---------------------------------------------------------------------------

def wire_name(obj: msgspec.Struct) -> str:
    """The name a journal row and a published event carry for `obj`: its struct's tag,
    written out in each class statement, so renaming a class never renames what is
    stored or sent (tests/actors/test_wire_names.py holds the list)."""
    return type(obj).__struct_config__.tag


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    profile_id: str
    seq: int
    ts: datetime
    causation_id: str

    @property
    def event_id(self) -> str:
        return f"{self.profile_id}/{self.seq}"


class CapitalDeposited(Event, frozen=True, tag="CapitalDeposited"):
    transfer: Transfer


class CapitalWithdrawn(Event, frozen=True, tag="CapitalWithdrawn"):
    transfer: Transfer


class CapitalReserved(Event, frozen=True, tag="CapitalReserved"):
    reservation: Reservation


class ReservationReleased(Event, frozen=True, tag="ReservationReleased"):
    reservation: Reservation


class ReservationExpired(Event, frozen=True, tag="ReservationExpired"):
    reservation: Reservation


class OrderCapitalReserved(Event, frozen=True, tag="OrderCapitalReserved"):
    order: OrderCapital
    consumed: Reservation | None = None


class OrderFilled(Event, frozen=True, tag="OrderFilled"):
    fill: Fill
    order: OrderCapital
    position: PositionCapital
    released: Decimal
    position_opened: bool
    #: booked while the profile may not add exposure (a fill the broker reports after a
    #: halt, a breaker trip or REDUCE_ONLY: it happened, so it is booked): why; None when
    #: entries were allowed. The position is then to be closed (an alert says so).
    while_blocked: str | None = None


class OrderCapitalReleased(Event, frozen=True, tag="OrderCapitalReleased"):
    order: OrderCapital
    amount: Decimal


class PositionReduced(Event, frozen=True, tag="PositionReduced"):
    fill: Fill
    position: PositionCapital
    released: Decimal


class PositionClosed(Event, frozen=True, tag="PositionClosed"):
    position: PositionCapital


class OrderTriggered(Event, frozen=True, tag="OrderTriggered"):
    """A STOP / STOP_LIMIT order's trigger was touched: it is a market / limit order now
    (`order.triggered_at`)."""

    order: OrderCapital
    #: the market price that touched it
    price: Decimal


class PositionCloseRequested(Event, frozen=True, tag="PositionCloseRequested"):
    """A close of the position was asked for (recorded before the broker is asked)."""

    position: PositionCapital


class SignalRecorded(Event, frozen=True, tag="SignalRecorded"):
    signal: SignalRecord


class TradingStateChanged(Event, frozen=True, tag="TradingStateChanged"):
    state: str
    reason: str
    changed_by: str


class BreakerTripped(Event, frozen=True, tag="BreakerTripped"):
    """A drawdown breaker tripped: entries are refused until `trip.until` (the end of its
    period) or, for the max drawdown, until reset by hand."""

    trip: Trip
    #: when a price tick tripped it (risk marked to market): that tick's time; None when
    #: an entry, a fill or the period's end did
    tick_ts: datetime | None = None


class BreakerReset(Event, frozen=True, tag="BreakerReset"):
    """A tripped breaker ended: its period ended (`reset_by` "period") or by hand."""

    trip: Trip
    reset_by: str
    reason: str


class LedgerMismatchDetected(Event, frozen=True, tag="LedgerMismatchDetected"):
    snapshot: Buckets
    rebuilt: Buckets


# -- commands (to a LedgerActor) ------------------------------------------------------


#: an amount, quantity, price or fee as a command carries it: the ledger parses it
#: exactly (`money.parse_decimal`) against its currency's places, which only it knows
RawAmount = Decimal | str | int


class Command(msgspec.Struct, frozen=True, kw_only=True):
    cause: str = ""


class GetLedger(Command, frozen=True):
    pass


class GetProfile(Command, frozen=True):
    pass


class Deposit(Command, frozen=True):
    amount: RawAmount
    client_request_id: str
    #: answer only a repeat of an earlier deposit with this key; anything else is
    #: refused with `refusal` (the account had no cash left for a new one)
    repeat_only: bool = False
    refusal: Denial | None = None


class Withdraw(Command, frozen=True):
    amount: RawAmount
    client_request_id: str


class ReserveCapital(Command, frozen=True):
    symbol: str
    amount: RawAmount
    client_request_id: str
    ttl_s: int | None = None
    #: cap the amount by the allocation decision made in the actor (the allocation
    #: service always sends it; None: no cap)
    externals: Externals | None = None


class GetCapitalPicture(Command, frozen=True):
    """The profile's capital and exposure (`actors.allocation.CapitalPicture`)."""


class ReleaseReservation(Command, frozen=True):
    reservation_id: str
    reason: str = "client"


class ExpireReservations(Command, frozen=True):
    pass


class ReserveOrder(Command, frozen=True):
    order_id: str
    symbol: str
    side: str
    qty: RawAmount
    amount: RawAmount
    reservation_id: str | None = None


class PlaceOrder(Command, frozen=True):
    """Reserve an order's capital and record the order (`orders.OrderSpec`)."""

    spec: OrderSpec
    amount: RawAmount
    #: the account refused the order (its open position slots are taken): a repeat of
    #: an order already made is answered as before, a new one gets this
    refusal: Denial | None = None


class SubmitSignal(Command, frozen=True):
    """Size a signal into an order, check it, reserve, and record the signal."""

    signal: Signal
    policy: SignalPolicy


class ApplyEntryFill(Command, frozen=True):
    fill_id: str
    order_id: str
    position_id: str
    qty: RawAmount
    price: RawAmount
    fee: RawAmount = 0
    #: a fill reported by a broker has happened: book it even if it costs more than
    #: what the order reserved (the profile goes REDUCE_ONLY if that leaves it short)
    book: bool = False
    #: the part of `qty` the venue kept as its fee (a spot buy whose fee is taken in the
    #: coin bought): the position gets `qty - fee_qty`, and the fee is its value at
    #: `price` (then `fee` is 0)
    fee_qty: RawAmount = 0
    #: a fee charged in a third coin (`Fill.fee_coin`): its coin and quantity
    fee_coin: str | None = None
    fee_coin_qty: RawAmount = 0


class EndOrder(Command, frozen=True):
    order_id: str
    status: str = "CANCELED"
    #: why, as the broker said it (kept with the order as its `end_reason`)
    reason: str | None = None


class TriggerOrder(Command, frozen=True):
    """Record that the broker saw a stop order's trigger touched, at `price`."""

    order_id: str
    price: Decimal


class RequestClose(Command, frozen=True):
    """Record that a position is to be closed (then the broker is asked)."""

    position_id: str
    reason: str = "manual"


class ApplyExitFill(Command, frozen=True):
    fill_id: str
    position_id: str
    qty: RawAmount
    price: RawAmount
    fee: RawAmount = 0
    reason: str | None = None
    fee_coin: str | None = None
    fee_coin_qty: RawAmount = 0


class SetTradingState(Command, frozen=True):
    state: str
    reason: str = ""
    changed_by: str = "api"


class CheckRisk(Command, frozen=True):
    """What-if: every pre-trade check for a hypothetical entry; changes nothing."""

    #: sized and checked as `signal.submit` would
    signal: Signal
    policy: SignalPolicy


class ResetBreakers(Command, frozen=True):
    """Reset tripped breakers by hand (`kinds` empty: all); their references restart at
    the current equity."""

    kinds: tuple[str, ...] = ()
    reason: str = ""
    changed_by: str = "api"


class ObserveMarket(Command, frozen=True):
    """Risk marked to market: the prices of a tick (symbol -> last) moved a position of
    the profile; run the breakers (and report to the account's loss limits) now."""

    marks: dict
    tick_ts: datetime | None = None


class Audit(Command, frozen=True):
    """Check the invariants of the live ledger and compare it with a rebuild from rows."""


class Passivate(Command, frozen=True):
    """Internal: flush, then stop; the registry has already forgotten this actor."""


class Resync(Command, frozen=True):
    """Internal: a write of this profile failed; reload the ledger from storage."""
