"""The answer maps: how the domain's records look in an answer of the wire
(docs/protocol.md, section 6). Decimals stay Decimal and times datetime here; the codec
writes them as strings.

Pure functions of the records, used by the op modules and by the commands that answer
from the storage without a server (capflow.cli), so that both print the same maps.
"""

from __future__ import annotations

from typing import Any

from capflow.actors.model import messages as m
from capflow.actors.model.ledger import LedgerView, ProfileView
from capflow.actors.model.messages import Reservation

#: the ledger's buckets, in the order an answer (and `capflow profile show`) lists them
BUCKETS = ("allocated", "held", "reserved_for_orders", "reserved_for_positions",
           "realized_pnl", "fees", "available")


def ledger_map(v: LedgerView) -> dict[str, Any]:
    out = {name: getattr(v, name) for name in BUCKETS}
    out.update(profile_id=v.profile_id, currency=v.currency, state=v.state)
    return out


def profile_map(pv: ProfileView) -> dict[str, Any]:
    p = pv.profile
    return {"profile_id": p.profile_id, "currency": p.currency, "account_id": p.account_id,
            "risk_profile": p.risk_profile, "state": p.state, "state_reason": p.state_reason,
            "state_by": p.state_by, "state_at": p.state_at, "created_at": p.created_at,
            "initial_allocation": pv.initial_allocation, "ledger": ledger_map(pv.ledger),
            "risk": pv.risk}


def profile_list_item(p, snapshot) -> dict[str, Any]:
    """One profile of `profile.list`: its stored record and its ledger's last snapshot
    (None: no snapshot yet)."""
    ledger = None if snapshot is None else {
        **{f: getattr(snapshot, f) for f in snapshot.__struct_fields__},
        "available": snapshot.available}
    return {"profile_id": p.profile_id, "currency": p.currency,
            "account_id": p.account_id, "risk_profile": p.risk_profile,
            "state": p.state, "state_reason": p.state_reason, "ledger": ledger}


def reservation_map(h: Reservation, reused: bool) -> dict[str, Any]:
    return {"reservation_id": h.reservation_id, "client_request_id": h.client_request_id,
            "symbol": h.symbol, "amount": h.amount, "status": h.status,
            "created_at": h.created_at, "expires_at": h.expires_at, "reused": reused}


_ORDER_FIELDS = ("order_id", "client_order_id", "symbol", "side", "type", "qty",
                 "filled_qty", "price", "avg_price", "tp_price", "sl_price", "status",
                 "reserved", "position_id", "reservation_id", "signal_id", "strategy",
                 "exchange", "account_id", "created_at", "updated_at", "max_price",
                 "trigger_price", "time_in_force", "expire_at", "end_reason",
                 "triggered_at", "trail_amount", "trail_pct", "trail_activation")
_POSITION_FIELDS = ("position_id", "order_id", "symbol", "side", "status", "qty_open",
                    "qty_total", "entry_price", "exit_price", "entry_notional",
                    "exit_notional", "reserved", "realized_pnl", "fees", "tp_price",
                    "sl_price", "close_reason", "strategy", "exchange", "account_id",
                    "opened_at", "closed_at", "trail_amount", "trail_pct",
                    "trail_activation", "trail_best", "trail_stop")


def order_map(profile_id: str, o: m.OrderCapital) -> dict[str, Any]:
    return {"profile_id": profile_id, **{f: getattr(o, f) for f in _ORDER_FIELDS}}


def position_map(profile_id: str, p: m.PositionCapital) -> dict[str, Any]:
    out = {"profile_id": profile_id, **{f: getattr(p, f) for f in _POSITION_FIELDS}}
    out["net_pnl"] = p.realized_pnl - p.fees
    return out


def price_map(t) -> dict[str, Any]:
    """A market tick, as `market.price` answers it."""
    return {"symbol": t.symbol, "bid": t.bid, "ask": t.ask, "last": t.last, "ts": t.ts,
            "seq": t.seq}


def trip_map(t) -> dict[str, Any]:
    """A breaker trip that `risk.reset` lifted."""
    return {"breaker": t.kind, "code": t.code, "tripped_at": t.at,
            "loss_pct": t.loss_pct, "limit_pct": t.limit_pct}


def global_state_map(gs) -> dict:
    return {"state": gs.state, "reason": gs.reason, "changed_by": gs.changed_by,
            "changed_at": gs.changed_at}
