"""The records of what was traded and signaled: a fill, and a signal with an id with what
capflow answered it (`messages` re-exports both, beside the other ledger records)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class Fill(msgspec.Struct, frozen=True):
    fill_id: str
    order_id: str | None
    position_id: str
    kind: str  # ENTRY or EXIT
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    notional: Decimal
    fee: Decimal
    pnl: Decimal
    ts: datetime
    #: a fee the venue charged in a coin that is neither the symbol's base nor the
    #: money (a fee token): that coin and how much of it; `fee` is its value in the
    #: money at the venue's price (0 when the venue had none)
    fee_coin: str | None = None
    fee_coin_qty: Decimal | None = None


class SignalRecord(msgspec.Struct, frozen=True):
    """A signal with an id, and what capflow answered: repeating it returns this."""

    signal_id: str
    fingerprint: str
    risk_ok: bool
    risk_reason: str | None
    order_id: str | None
    position_id: str | None
    symbol: str
    side: str
    qty: Decimal | None
    tp_price: Decimal | None
    sl_price: Decimal | None
    ts: datetime
