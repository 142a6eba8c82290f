"""Ledger events -> PUB frames ``[topic, msgpack map]`` (docs/protocol.md, *Events*), and
the gateway's event socket.

Each map has `type` (past tense), `seq` (per topic, set by the server when it sends),
`ts`, `id`, `causation_id`, `profile_id`, and the object it is about. Deposits and
withdrawals go on ``ledger.<profile_id>``, recorded signals on ``signal.<profile_id>``,
simulator ticks on ``tick.<symbol>``, broker connection changes on
``broker.<account_id>`` and alerts (`actors.alerts`) on ``alert``: topics this
implementation adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import zmq
from loguru import logger

from capflow.actors.alerts import Alert
from capflow.actors.model import messages as m
from capflow.actors.model.amend import OrderAmended
from capflow.actors.model.messages import wire_name
from capflow.actors.model.stop_messages import PositionStopsChanged, TrailMoved
from capflow.actors.model.ticks import Tick
from capflow.brokers.events import BrokerEvent
from capflow.protocol.codec import pack

if TYPE_CHECKING:
    from capflow.protocol.auth import Authorizer

_TOPIC = {
    m.CapitalReserved: "reservation", m.ReservationReleased: "reservation",
    m.ReservationExpired: "reservation", m.OrderCapitalReserved: "order",
    m.OrderCapitalReleased: "order", m.OrderTriggered: "order", OrderAmended: "order",
    m.OrderFilled: "fill",
    m.PositionReduced: "fill",
    m.PositionClosed: "position", m.PositionCloseRequested: "position",
    PositionStopsChanged: "position", TrailMoved: "position",
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
                body["type"] = wire_name(e)
                yield f"broker.{e.account_id}", body
            elif isinstance(e, Alert):
                yield "alert", {"type": "Alert", **msgspec.structs.asdict(e)}
            continue
        body: dict[str, Any] = {"type": wire_name(e), "id": e.event_id, "ts": e.ts,
                                "causation_id": e.causation_id, "profile_id": e.profile_id}
        for name in e.__struct_fields__:
            if name not in _BASE:
                value = getattr(e, name)
                body[name] = (msgspec.structs.asdict(value)
                              if isinstance(value, msgspec.Struct) else value)
        yield f"{kind}.{e.profile_id}", body


class Publisher:
    """The event socket, owned by the gateway's socket thread.

    In plain mode a PUB socket. Under CURVE the server decides who may subscribe (XPUB,
    manual subscriptions): a PUB socket cannot send a topic to some subscribers only, and
    topic prefixes ("reservation.alpha" also matches "reservation.alphabet") make
    per-profile filtering unsound, so only keys granted every profile get the stream.
    """

    def __init__(self, ctx: zmq.Context, authorizer: Authorizer | None):
        self.authorizer = authorizer
        self.sock = ctx.socket(zmq.XPUB if authorizer is not None else zmq.PUB)
        if authorizer is not None:
            self.sock.setsockopt(zmq.XPUB_MANUAL, 1)
        self._seq: dict[str, int] = {}

    def on_subscriptions(self) -> None:
        """Grant or refuse each (un)subscription waiting on the XPUB socket."""
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            data = frame.bytes
            if not data or data[0] not in (0, 1):
                continue
            try:
                user_id = frame.get("User-Id")
            except zmq.ZMQError:  # no metadata: see below
                user_id = None
            if user_id is None:
                # libzmq itself sends the unsubscriptions of a peer that went away, with
                # no metadata (and has already dropped the peer); a subscription without
                # a key cannot be granted
                if data[0] == 1:
                    logger.warning("refused an event subscription without a CURVE key")
                continue
            caller = self.authorizer.caller(user_id)
            if caller.profiles is not None:  # restricted keys get no event stream
                logger.info("refused an event subscription from {}", caller.name)
                continue
            self.sock.setsockopt(zmq.SUBSCRIBE if data[0] == 1 else zmq.UNSUBSCRIBE,
                                 data[1:])

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        body["seq"] = seq
        try:
            self.sock.send_multipart([topic.encode(), pack(body)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
