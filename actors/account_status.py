"""`AccountStatus`: what an account manager (`actors.account`) shows the other threads,
and how capflow's orders and positions look to its adapter (`broker_order`,
`broker_position`)."""

from __future__ import annotations

from decimal import Decimal

from capflow.actors.model import messages as m
from capflow.actors.model.account_risk import AccountRisk
from capflow.actors.model.latency import Latency
from capflow.actors.model.prices import PriceWatch
from capflow.actors.model.trailing import trail_of
from capflow.actors.model.venue import VenueRules
from capflow.brokers.events import BrokerEvent, BrokerOrder, BrokerPosition


class AccountStatus:
    """What an account manager shows other threads (written only by its own thread)."""

    def __init__(self) -> None:
        self.state = "DISCONNECTED"
        #: ledger bookings sent and not yet answered
        self.pending = 0
        #: connection events so far (Connected, ConnectionFailed, Disconnected)
        self.connection_events: list[BrokerEvent] = []
        self.booking_errors = 0
        #: capital the account's profiles were allocated, and its cap (initial cash)
        self.allocated = Decimal(0)
        self.capital = Decimal(0)
        #: the account's `max_live_capital`: what its profiles may be allocated at most,
        #: whatever its cash (None: no cap but the cash)
        self.capital_cap: Decimal | None = None
        #: the free cash the adapter last reported, and whether anything that can
        #: change it (an order, a fill, an exit) has been handled since
        self.free_cash: Decimal | None = None
        self.cash_dirty = True
        #: monotonic time the message being handled started at (None: idle)
        self.busy_since: float | None = None
        #: symbols with open position slots or claims (what the manager keeps per symbol)
        self.slot_symbols = 0
        #: the account's limits across its profiles (`actors.account_risk`); the ledgers
        #: read the exposure the others reported from it
        self.risk: AccountRisk | None = None
        #: working entry orders the manager knows of
        self.working_entries = 0
        #: the venue's instrument rules its adapter published (None: the adapter has
        #: none, e.g. paper): entries are rounded and checked by them before reserving
        self.venue_rules: VenueRules | None = None
        #: the last reconciliation with the venue (`brokers.reconcile.Reconciled`)
        self.last_reconcile = None
        #: how fresh the venue's prices are (None: the adapter publishes none)
        self.prices: PriceWatch | None = None
        #: its orders' latency from send to the venue's acknowledgement (None: the
        #: adapter does not measure it)
        self.latency: Latency | None = None


def broker_order(profile_id: str, o: m.OrderCapital) -> BrokerOrder:
    return BrokerOrder(order_id=o.order_id, profile_id=profile_id, symbol=o.symbol,
                       side=o.side, type=o.type, qty=o.qty, price=o.price,
                       position_id=o.position_id or o.order_id, tp_price=o.tp_price,
                       sl_price=o.sl_price, filled_qty=o.filled_qty, max_price=o.max_price,
                       trigger_price=o.trigger_price, time_in_force=o.time_in_force,
                       expire_at=o.expire_at, triggered=o.triggered_at is not None,
                       trail=trail_of(o))


def broker_position(profile_id: str, p: m.PositionCapital) -> BrokerPosition:
    return BrokerPosition(position_id=p.position_id, profile_id=profile_id, symbol=p.symbol,
                          side=p.side, qty=p.qty_open, entry_price=p.entry_price or
                          p.entry_notional / p.qty_total, tp_price=p.tp_price,
                          sl_price=p.sl_price, closing=p.close_requested,
                          exited_qty=p.qty_total - p.qty_open, trail=trail_of(p))
