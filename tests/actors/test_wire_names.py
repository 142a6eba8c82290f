"""The names events carry in the journal's rows and on the event topics are part of the
stored format and the wire contract: a class rename must not change them.

Each event class states its name (`tag=` in its class statement); this list is what
was stored and published before the names were written out, and stays as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from capflow.actors.model import messages as m
from capflow.actors.model import stop_messages  # noqa: F401 -- its events count too
from capflow.actors.model.messages import wire_name
from capflow.brokers import events as b

JOURNAL_AND_PROFILE_TOPICS = {
    "CapitalDeposited", "CapitalWithdrawn", "CapitalReserved", "ReservationReleased",
    "ReservationExpired", "OrderCapitalReserved", "OrderFilled", "OrderCapitalReleased",
    "PositionReduced", "PositionClosed", "PositionCloseRequested", "SignalRecorded",
    "TradingStateChanged", "BreakerTripped", "BreakerReset", "LedgerMismatchDetected",
    "OrderTriggered", "PositionStopsChanged", "TrailMoved", "OrderAmended",
}
BROKER_TOPIC = {
    "Connected", "ConnectionFailed", "Disconnected", "OrderAccepted", "OrderFilled",
    "PositionExited", "OrderCanceled", "OrderRejected", "OrderTriggered", "TrailMoved",
}


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_event_class_states_its_name_and_the_names_are_unchanged():
    events = _subclasses(m.Event)
    for cls in events:
        assert "tag=" in _statement(cls), f"{cls.__name__} does not state its wire name"
    assert {cls.__struct_config__.tag for cls in events} == JOURNAL_AND_PROFILE_TOPICS


def test_every_broker_event_states_its_name_and_the_names_are_unchanged():
    events = _subclasses(b.BrokerEvent)
    for cls in events:
        assert "tag=" in _statement(cls), f"{cls.__name__} does not state its wire name"
    assert {cls.__struct_config__.tag for cls in events} == BROKER_TOPIC
    # the broker's fill report and the ledger's fill event are two classes, one name
    assert b.EntryFilled is not m.OrderFilled
    assert b.EntryFilled.__struct_config__.tag == m.OrderFilled.__struct_config__.tag


def test_wire_name_is_the_stated_name_not_the_class_name():
    fill = b.EntryFilled(account_id="a", ts=datetime(2026, 1, 5, tzinfo=UTC), order_id="o",
                         profile_id="p", position_id="x", fill_id="f", qty=Decimal(1),
                         price=Decimal(1), fee=Decimal(0), liquidity="TAKER")
    assert wire_name(fill) == "OrderFilled"


def _statement(cls: type) -> str:
    import inspect

    source = inspect.getsource(cls)
    return source[:source.index(":")]
