"""What each journal verb writes: domain records and events turned into the writer's row
operations (storage/statements.py says how those become SQL).

Each ledger event becomes the row changes it implies plus one append-only journal row
(the encoded event, under its wire name), committed together with the ledger snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model.amend import OrderAmended
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import (
    CapitalDeposited,
    CapitalReserved,
    CapitalWithdrawn,
    Event,
    OrderCapitalReleased,
    OrderCapitalReserved,
    OrderFilled,
    OrderTriggered,
    PositionCloseRequested,
    PositionReduced,
    Profile,
    ReservationExpired,
    ReservationReleased,
    SignalRecorded,
    TradingStateChanged,
    Transfer,
    wire_name,
)
from capflow.actors.model.outcome import INITIAL_ALLOCATION_KEY
from capflow.actors.model.risk import AccountState, BreakerState, GlobalState
from capflow.actors.model.stop_messages import PositionStopsChanged, TrailMoved
from capflow.storage.statements import Op

_asdict = msgspec.structs.asdict
_json = msgspec.json.Encoder(decimal_format="string")
#: the name of the one `system_state` row: the global kill switch
GLOBAL_STATE = "trading"


def _with(profile_id: str, record: msgspec.Struct) -> dict[str, Any]:
    row = _asdict(record)
    row["profile_id"] = profile_id
    return row


def rows_for(events: Iterable[Event]) -> list[Op]:
    """The row operations that persist `events`, journal rows included."""
    ops: list[Op] = []
    for e in events:
        pid = e.profile_id
        if isinstance(e, CapitalReserved | ReservationReleased | ReservationExpired):
            ops.append(("upsert", "reservations", _with(pid, e.reservation)))
        elif isinstance(e, CapitalDeposited | CapitalWithdrawn):
            ops.append(("insert", "transfers", _with(pid, e.transfer)))
        elif isinstance(e, OrderCapitalReserved):
            ops.append(("upsert", "orders", _with(pid, e.order)))
            if e.consumed is not None:
                ops.append(("upsert", "reservations", _with(pid, e.consumed)))
        elif isinstance(e, OrderFilled):
            ops.append(("insert", "fills", _with(pid, e.fill)))
            ops.append(("upsert", "orders", _with(pid, e.order)))
            ops.append(("upsert", "positions", _with(pid, e.position)))
        elif isinstance(e, OrderCapitalReleased | OrderTriggered | OrderAmended):
            ops.append(("upsert", "orders", _with(pid, e.order)))
        elif isinstance(e, PositionCloseRequested | PositionStopsChanged | TrailMoved):
            ops.append(("upsert", "positions", _with(pid, e.position)))
        elif isinstance(e, PositionReduced):
            ops.append(("insert", "fills", _with(pid, e.fill)))
            ops.append(("upsert", "positions", _with(pid, e.position)))
        elif isinstance(e, SignalRecorded):
            ops.append(("insert", "signals", _with(pid, e.signal)))
        elif isinstance(e, TradingStateChanged):
            ops.append(("update", "profiles", {"profile_id": pid, "state": e.state,
                                               "state_reason": e.reason,
                                               "state_by": e.changed_by, "state_at": e.ts}))
        ops.append(("insert", "ledger_journal", {
            "profile_id": pid, "seq": e.seq, "ts": e.ts, "type": wire_name(e),
            "causation_id": e.causation_id[:160], "payload": _json.encode(e).decode()}))
    return ops


def snapshot_row(ledger: Ledger, now: datetime) -> dict[str, Any]:
    return {"profile_id": ledger.profile_id, "allocated": ledger.allocated,
            "held": ledger.held, "reserved_for_orders": ledger.reserved_for_orders,
            "reserved_for_positions": ledger.reserved_for_positions,
            "realized_pnl": ledger.realized_pnl, "fees": ledger.fees,
            "last_seq": ledger.seq, "updated_at": now,
            "risk_state": _risk_json(ledger)}


_EMPTY_BREAKERS = BreakerState()


def _risk_json(ledger: Ledger) -> str | None:
    state = ledger.risk.breakers
    if state == _EMPTY_BREAKERS:
        return None
    cached = ledger.risk.encoded  # most commits repeat the state of the one before
    if cached is None or cached[0] is not state:
        cached = ledger.risk.encoded = (state, _json.encode(state).decode())
    return cached[1]


def profile_rows(profile: Profile, allocated: Decimal) -> list[Op]:
    """Rows of a new profile: the profile, its snapshot, and the initial allocation as
    a transfer with its journal row (seq 1), so the rebuild sees it."""
    now = profile.created_at
    ops: list[Op] = [("insert", "profiles", _asdict(profile))]
    seq = 0
    if allocated:
        seq = 1
        t = Transfer(f"{profile.profile_id}:t1", INITIAL_ALLOCATION_KEY, allocated, now)
        ops += rows_for([CapitalDeposited(profile_id=profile.profile_id, seq=1, ts=now,
                                          causation_id="profile.create", transfer=t)])
    zero = allocated * 0  # zero with the currency's places
    snap = {"profile_id": profile.profile_id, "allocated": allocated, "held": zero,
            "reserved_for_orders": zero, "reserved_for_positions": zero,
            "realized_pnl": zero, "fees": zero, "last_seq": seq, "updated_at": now,
            "risk_state": None}
    ops.insert(1, ("upsert", "ledger_snapshots", snap))
    return ops


def global_state_row(state: GlobalState) -> Op:
    return ("upsert", "system_state", {
        "name": GLOBAL_STATE, "state": state.state, "reason": state.reason,
        "changed_by": state.changed_by, "changed_at": state.changed_at})


def account_state_row(account_id: str, state: AccountState,
                      saved: dict[str, Any] | None) -> Op:
    return ("upsert", "account_states", {
        "account_id": account_id, "state": state.state, "reason": state.reason,
        "changed_by": state.changed_by, "changed_at": state.changed_at,
        "risk_state": None if saved is None else _json.encode(saved).decode()})


def flatten_row(key: str, scope: str, target: str | None, reason: str, requested_by: str,
                created_at: datetime, result: dict[str, Any]) -> Op:
    return ("insert", "flattens", {
        "client_request_id": key, "scope": scope, "target": target, "reason": reason,
        "requested_by": requested_by, "created_at": created_at,
        "result": _json.encode(result).decode()})
