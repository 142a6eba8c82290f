"""The messages an `AccountManagerActor` (`actors.account`) handles. Each travels in its
mailbox with a `Reply`, as ``(message, reply)``; the manager answers every one of them.
`new_order_listener` sends it those the ledgers' events call for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model import messages as m
from capflow.actors.model.scale_in import is_scale_in
from capflow.actors.reply import Reply


class Place(msgspec.Struct, frozen=True):
    profile_id: str
    order: m.OrderCapital


class Cancel(msgspec.Struct, frozen=True):
    profile_id: str
    order_id: str


class Amend(msgspec.Struct, frozen=True):
    """Amend a working order: book `cmd` (`actors.model.amend.AmendOrder`) on the
    profile's ledger, then apply it at the broker (`actors.account_amend`)."""

    profile_id: str
    cmd: Any


class Reduce(msgspec.Struct, frozen=True):
    """Exit `qty` of a position at market (`position.reduce`, `actors.account_amend`)."""

    profile_id: str
    position_id: str
    qty: Decimal


class Close(msgspec.Struct, frozen=True):
    profile_id: str
    position_id: str
    reason: str = "manual"


class Stops(msgspec.Struct, frozen=True):
    """Give the broker a position's stops (`position.set_stops`): all of them, as the
    ledger now has them (a `Trail` or None). When the trail was left as it was
    (`trail_changed` false), the broker keeps its own: the ledger's copy of a moving
    trail may be a tick behind it."""

    profile_id: str
    position_id: str
    tp_price: Any = None
    sl_price: Any = None
    trail: Any = None
    trail_changed: bool = True


class Ticks(msgspec.Struct, frozen=True):
    ticks: list


class Restore(msgspec.Struct, frozen=True):
    orders: list  # (profile_id, OrderCapital)
    positions: list  # (profile_id, PositionCapital)


class Info(msgspec.Struct, frozen=True):
    pass


class Sync(msgspec.Struct, frozen=True):
    """Answered once everything before it in the mailbox is handled."""


class ClaimCapital(msgspec.Struct, frozen=True):
    """Before capital is allocated to a profile on this account (creation, deposit):
    claim it from the account's unallocated cash. Answered with a claim id, or
    `INSUFFICIENT_CAPITAL`. Every claim is settled afterwards."""

    profile_id: str
    amount: Decimal


class SettleClaim(msgspec.Struct, frozen=True):
    """The allocation a claim was made for is done: `booked` of it stays allocated
    (0 when it failed or was a repeat)."""

    claim_id: int
    booked: Decimal


class ReturnCapital(msgspec.Struct, frozen=True):
    """A profile on this account gave capital back (a withdrawal)."""

    amount: Decimal


class ClaimSlot(msgspec.Struct, frozen=True):
    """Before an entry order on this account: claim one of the account-wide open position
    slots (`[risk.accounts.<id>]`). Answered with a claim id, or `RISK_REJECTED`
    (`MAX_OPEN_POSITIONS` / `MAX_OPEN_POSITIONS_PER_SYMBOL`, scope account). Every claim
    is settled afterwards, whatever happened to the order."""

    profile_id: str
    symbol: str


class SettleSlot(msgspec.Struct, frozen=True):
    """The order a slot was claimed for was recorded (its `Place` came first, and holds
    the slot now) or was not: the claim itself ends."""

    claim_id: int


class FreeSlot(msgspec.Struct, frozen=True):
    """A position of this account closed, or an entry order ended without a fill."""

    position_id: str


class SlotQuery(msgspec.Struct, frozen=True):
    """`risk.check`: the account-wide checks for one more entry in `symbol`."""

    symbol: str


class CancelEntries(msgspec.Struct, frozen=True):
    """A halt: cancel the working entry orders of these profiles (None: every profile of
    the account), each once, with `reason`. Answered with the ids asked to cancel now."""

    profile_ids: frozenset | None
    reason: str


class ReportEquity(msgspec.Struct, frozen=True):
    """A profile's PnL (equity - allocated) and gross exposure now, for the account-wide
    loss and exposure limits."""

    profile_id: str
    pnl: Decimal
    exposure: Decimal
    ts: Any


class RebaseLossLimits(msgspec.Struct, frozen=True):
    """A person resumed the account after its loss limits halted it: count the losses
    from now on (answered with what is to be stored)."""


class Reconcile(msgspec.Struct, frozen=True):
    """Reconcile the account with its venue now. `wait`: answered with the report once
    it is made (`account.reconcile`); else answered at once (at start: the adapter may
    reconcile from now on, what capflow holds being restored)."""

    wait: bool = True


class GetAccount(msgspec.Struct, frozen=True):
    """What `account.get` shows: connection, balances, last reconcile, data age."""


def new_order_listener(account_id: str, ref
                       ) -> Callable[[Sequence[m.Event]], None]:
    """A bus listener that sends the account's newly recorded orders to its manager, and
    tells it of the positions (and never-filled entry orders) that end."""

    def listener(events: Sequence[m.Event]) -> None:
        for e in events:
            if isinstance(e, m.OrderCapitalReserved) and e.order.account_id == account_id:
                ref.tell((Place(e.profile_id, e.order), Reply()))
            elif isinstance(e, m.PositionClosed) and e.position.account_id == account_id:
                ref.tell((FreeSlot(e.position.position_id), Reply()))
            elif (isinstance(e, m.OrderCapitalReleased) and e.order.filled_qty == 0
                  and e.order.account_id == account_id and not is_scale_in(e.order)):
                ref.tell((FreeSlot(e.order.position_id or e.order.order_id), Reply()))

    return listener
