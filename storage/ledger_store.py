"""Reads of ledger state: profiles, loading one ledger, and rebuilding from rows.

What the journal writes is storage/rows.py; this module only reads it back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Engine, func, select

from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import (
    ACTIVE,
    Buckets,
    OrderCapital,
    PositionCapital,
    Profile,
    Reservation,
    SignalRecord,
    Transfer,
)
from capflow.actors.model.money import ZERO
from capflow.actors.model.protections import CLOSES_KEPT, Close
from capflow.actors.model.risk import BreakerState
from capflow.storage import schema as s
from capflow.storage.rows import GLOBAL_STATE

OPEN_ORDER_STATES = ("OPEN", "PARTIALLY_FILLED")

_decode_risk = msgspec.json.Decoder(BreakerState)


def _record(cls: type, row: Any) -> Any:
    m = row._mapping
    return cls(**{f: m[f] for f in cls.__struct_fields__})


class LedgerStore:
    """Reads of ledger state. Writes go through the journal (storage/journal.py)."""

    def __init__(self, engine: Engine, places_for):
        self.engine = engine
        self.places_for = places_for

    # -- profiles ---------------------------------------------------------------------

    def profile_ids(self) -> list[str]:
        with self.engine.connect() as c:
            return list(c.execute(select(s.profiles.c.profile_id)).scalars())

    def get_profile(self, profile_id: str) -> Profile | None:
        with self.engine.connect() as c:
            row = c.execute(select(s.profiles).where(s.profiles.c.profile_id == profile_id)
                            ).first()
        return None if row is None else _record(Profile, row)

    def list_profiles(self, after: str = "", limit: int = 1000,
                      only: Iterable[str] | None = None) -> list[Profile]:
        """Profiles ordered by id after `after` (a cursor), at most `limit`, optionally
        only those in `only`."""
        query = select(s.profiles).where(s.profiles.c.profile_id > after)
        if only is not None:
            query = query.where(s.profiles.c.profile_id.in_(list(only)))
        with self.engine.connect() as c:
            return [_record(Profile, r) for r in c.execute(
                query.order_by(s.profiles.c.profile_id).limit(limit))]

    def currencies(self, profile_ids: Iterable[str] | None = None) -> list[str]:
        """The currencies of the profiles (all, or of `profile_ids`), each once, sorted."""
        query = select(s.profiles.c.currency).distinct()
        if profile_ids is not None:
            query = query.where(s.profiles.c.profile_id.in_(list(profile_ids)))
        with self.engine.connect() as c:
            return sorted(c.execute(query).scalars())

    # -- ledgers ----------------------------------------------------------------------

    def recent_closes(self, profile_id: str) -> list[Close]:
        """The profile's most recent closed positions (at most `CLOSES_KEPT`), oldest
        first: what its protections are derived from."""
        p = s.positions.c
        with self.engine.connect() as c:
            rows = c.execute(select(p.symbol, p.closed_at, p.close_reason)
                             .where(p.profile_id == profile_id, p.status == "CLOSED",
                                    p.closed_at.is_not(None))
                             .order_by(p.closed_at.desc()).limit(CLOSES_KEPT)).all()
        return [Close(r.symbol, r.closed_at, r.close_reason) for r in reversed(rows)]

    def load(self, profile_id: str) -> tuple[Profile, Ledger] | None:
        with self.engine.connect() as c:
            prof = c.execute(select(s.profiles).where(s.profiles.c.profile_id == profile_id)
                             ).first()
            if prof is None:
                return None
            snap = c.execute(select(s.ledger_snapshots).where(
                s.ledger_snapshots.c.profile_id == profile_id)).one()._mapping
            reservations = [_record(Reservation, r) for r in c.execute(
                select(s.reservations).where(s.reservations.c.profile_id == profile_id))]
            orders = [_record(OrderCapital, r) for r in c.execute(
                select(s.orders).where(s.orders.c.profile_id == profile_id,
                                       s.orders.c.status.in_(OPEN_ORDER_STATES)))]
            positions = [_record(PositionCapital, r) for r in c.execute(
                select(s.positions).where(s.positions.c.profile_id == profile_id,
                                          s.positions.c.status == "OPEN"))]
            transfers = [_record(Transfer, r) for r in c.execute(
                select(s.transfers).where(s.transfers.c.profile_id == profile_id))]
            o = s.orders.c
            # (what `OrderSpec.fingerprint` compares, in its order)
            order_keys = {r.client_order_id: (r.order_id, _with_trail((
                r.symbol, r.side, r.type, r.qty, r.price, r.tp_price, r.sl_price,
                r.reservation_id, r.trigger_price, r.time_in_force, r.expire_at), (
                r.trail_amount, r.trail_pct, r.trail_activation)))
                for r in c.execute(
                select(o.client_order_id, o.order_id, o.symbol, o.side, o.type, o.qty,
                       o.price, o.tp_price, o.sl_price, o.reservation_id, o.trigger_price,
                       o.time_in_force, o.expire_at, o.trail_amount, o.trail_pct,
                       o.trail_activation)
                .where(o.profile_id == profile_id, o.client_order_id.is_not(None)))}
            signals = [_record(SignalRecord, r) for r in c.execute(
                select(s.signals).where(s.signals.c.profile_id == profile_id))]
        buckets = Buckets(snap["allocated"], realized_pnl=snap["realized_pnl"],
                          fees=snap["fees"])
        profile = _record(Profile, prof)
        ledger = Ledger(profile_id, profile.currency, self.places_for(profile.currency),
                        buckets=buckets, seq=snap["last_seq"], state=profile.state,
                        reservations=reservations, orders=orders, positions=positions,
                        transfers=transfers,
                        order_keys=order_keys, signals=signals,
                        breakers=None if snap["risk_state"] is None
                        else _decode_risk.decode(snap["risk_state"]))
        return profile, ledger

    def ended_order(self, profile_id: str, order_id: str) -> OrderCapital | None:
        """A stored order of the profile that has ended (canceled, rejected, expired,
        filled), or None: the ledger keeps only the last few it ended in memory, and none
        across a restart, while a venue may report a fill of one later."""
        o = s.orders.c
        with self.engine.connect() as c:
            row = c.execute(select(s.orders).where(
                o.order_id == order_id, o.profile_id == profile_id,
                o.status.not_in(OPEN_ORDER_STATES))).first()
        return None if row is None else _record(OrderCapital, row)

    # -- whole-database views (recovery, audit) ---------------------------------------

    def snapshots(self, profile_ids: list[str] | None = None) -> dict[str, Buckets]:
        """The stored snapshots (all, or of `profile_ids`): committed state, no actor."""
        query = select(s.ledger_snapshots)
        if profile_ids is not None:
            query = query.where(s.ledger_snapshots.c.profile_id.in_(profile_ids))
        with self.engine.connect() as c:
            return {r.profile_id: Buckets(r.allocated, r.held, r.reserved_for_orders,
                                          r.reserved_for_positions, r.realized_pnl, r.fees)
                    for r in c.execute(query)}

    def rebuild(self, profile_ids: Iterable[str] | None = None) -> dict[str, Buckets]:
        """Each ledger as its rows imply it: transfers, live reservations, open orders and
        positions, and fills. Sums are done here in Decimal, not in SQL (SQLite has no
        exact decimal type)."""
        sums: dict[str, dict[str, Decimal]] = {}
        only = set(profile_ids) if profile_ids is not None else None

        def want(pid: str) -> bool:
            return only is None or pid in only

        with self.engine.connect() as c:
            for pid, in c.execute(select(s.profiles.c.profile_id)):
                if want(pid):  # a profile with no rows still rebuilds (to zero)
                    sums[pid] = defaultdict(lambda: ZERO)
            queries = [
                ("allocated", select(s.transfers.c.profile_id, s.transfers.c.amount)),
                ("held", select(s.reservations.c.profile_id, s.reservations.c.amount)
                 .where(s.reservations.c.status == ACTIVE)),
                ("reserved_for_orders", select(s.orders.c.profile_id, s.orders.c.reserved)
                 .where(s.orders.c.status.in_(OPEN_ORDER_STATES))),
                ("reserved_for_positions", select(s.positions.c.profile_id,
                                                  s.positions.c.reserved)
                 .where(s.positions.c.status == "OPEN")),
                ("realized_pnl", select(s.fills.c.profile_id, s.fills.c.pnl)),
                ("fees", select(s.fills.c.profile_id, s.fills.c.fee)),
            ]
            for bucket, query in queries:
                for pid, amount in c.execute(query):
                    if pid in sums:
                        sums[pid][bucket] += amount
        return {pid: Buckets(**b) for pid, b in sums.items()}

    def global_state(self) -> dict[str, Any] | None:
        """The stored global trading state (the kill switch), if one was ever set."""
        with self.engine.connect() as c:
            row = c.execute(select(s.system_state)
                            .where(s.system_state.c.name == GLOBAL_STATE)).first()
        return None if row is None else dict(row._mapping)

    def active_expiries(self) -> list[tuple[str, datetime]]:
        """(profile_id, earliest expiry) for every profile with an active reservation."""
        with self.engine.connect() as c:
            return [(r[0], r[1]) for r in c.execute(
                select(s.reservations.c.profile_id, func.min(s.reservations.c.expires_at))
                .where(s.reservations.c.status == ACTIVE)
                .group_by(s.reservations.c.profile_id))]


def _with_trail(base: tuple, trail: tuple) -> tuple:
    """An order's fingerprint (`OrderSpec.fingerprint`): a trail adds its fields."""
    return base if trail == (None, None, None) else (*base, trail)
