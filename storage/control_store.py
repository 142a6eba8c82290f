"""Reads of what the kill switch keeps (`actors.safety`): the broker accounts' trading
states, the flattens done, and which profiles have a tripped breaker. Writes go through
the journal (`set_account_state`, `record_flatten`; their rows: storage/rows.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Engine, select

from capflow.actors.model.risk import BreakerState
from capflow.storage import schema as s

_decode_risk = msgspec.json.Decoder(BreakerState)


class ControlStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def account_states(self) -> dict[str, dict[str, Any]]:
        """account id -> its stored state row (``risk_state`` decoded, or None)."""
        with self.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(select(s.account_states))]
        for r in rows:
            r["risk_state"] = (None if r["risk_state"] is None
                               else msgspec.json.decode(r["risk_state"]))
        return {r["account_id"]: r for r in rows}

    def flatten(self, requested_by: str, key: str) -> dict[str, Any] | None:
        """The flatten `requested_by` did under `key` (each caller's keys are its own)."""
        t = s.flattens
        with self.engine.connect() as c:
            row = c.execute(select(t).where(t.c.requested_by == requested_by,
                                            t.c.client_request_id == key)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["result"] = msgspec.json.decode(out["result"])
        return out

    def tripped_breakers(self) -> dict[str, list[str]]:
        """profile id -> the reason codes of its tripped breakers, for every profile
        that has one (as its last snapshot stored them)."""
        t = s.ledger_snapshots
        out: dict[str, list[str]] = {}
        with self.engine.connect() as c:
            for pid, text in c.execute(select(t.c.profile_id, t.c.risk_state)
                                       .where(t.c.risk_state.is_not(None))):
                trips = _decode_risk.decode(text).trips
                if trips:
                    out[pid] = sorted(trip.code for trip in trips.values())
        return out
