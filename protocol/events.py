"""Ledger events -> PUB frames ``[topic, msgpack map]`` (PROTOCOL.md, *Events*).

Each map has `type` (past tense), `seq` (per topic, set by the server when it sends),
`ts`, `id`, `causation_id`, `profile_id`, and the object it is about. Deposits and
withdrawals go on ``ledger.<profile_id>``, recorded signals on ``signal.<profile_id>``,
simulator ticks on ``tick.<symbol>``, broker connection changes on
``broker.<account_id>`` and alerts (`actors.alerts`) on ``alert``: topics this
implementation adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from actors import messages as m
from actors.alerts import Alert
from actors.simulator import Tick
from brokers.base import BrokerEvent

_TOPIC = {
    m.CapitalReserved: "reservation", m.ReservationReleased: "reservation",
    m.ReservationExpired: "reservation", m.OrderCapitalReserved: "order",
    m.OrderCapitalReleased: "order", m.OrderFilled: "fill", m.PositionReduced: "fill",
    m.PositionClosed: "position", m.PositionCloseRequested: "position",
    m.TradingStateChanged: "risk",
    m.LedgerMismatchDetected: "risk", m.BreakerTripped: "risk", m.BreakerReset: "risk",
    m.CapitalDeposited: "ledger",
    m.CapitalWithdrawn: "ledger", m.SignalRecorded: "signal",
}
_BASE = frozenset({"profile_id", "seq", "ts", "causation_id"})


def event_frames(events: Iterable[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for e in events:
        kind = _TOPIC.get(type(e))
        if kind is None:
            if isinstance(e, Tick):
                yield f"tick.{e.symbol}", {"type": "Tick", "ts": e.ts, "symbol": e.symbol,
                                           "bid": e.bid, "ask": e.ask, "last": e.last,
                                           "tick_seq": e.seq}
            elif isinstance(e, BrokerEvent):
                body = msgspec.structs.asdict(e)
                body["type"] = type(e).__name__
                yield f"broker.{e.account_id}", body
            elif isinstance(e, Alert):
                yield "alert", {"type": "Alert", **msgspec.structs.asdict(e)}
            continue
        body: dict[str, Any] = {"type": type(e).__name__, "id": e.event_id, "ts": e.ts,
                                "causation_id": e.causation_id, "profile_id": e.profile_id}
        for name in e.__struct_fields__:
            if name not in _BASE:
                value = getattr(e, name)
                body[name] = (msgspec.structs.asdict(value)
                              if isinstance(value, msgspec.Struct) else value)
        yield f"{kind}.{e.profile_id}", body
