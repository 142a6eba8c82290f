"""The paper broker keeps its open positions as the adapter interface's own record,
`BrokerPosition`: what `portfolio()` answers is what it acts on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from capflow.actors.model.clock import ManualClock
from capflow.actors.model.ticks import Tick
from capflow.brokers.config import AccountConfig
from capflow.brokers.events import (
    BrokerOrder,
    BrokerPosition,
    EntryFilled,
    OrderCanceled,
    PositionExited,
)
from capflow.brokers.paper import PaperBroker

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def tick(seq: int, bid: str, ask: str, liquidity: str = "1") -> Tick:
    return Tick("BTCUSDT", seq, T0, D(bid), D(ask), D(bid), D(liquidity))


def test_the_portfolio_is_the_positions_the_broker_acts_on():
    events = []
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}),
                         clock=ManualClock(), emit=events.append)
    broker.init()
    broker.start()
    broker.submit_order(BrokerOrder(order_id="o1", profile_id="p", symbol="BTCUSDT",
                                    side="BUY", type="MARKET", qty=D("3"),
                                    position_id="pos1", sl_price=D("90")))
    broker.on_tick(tick(1, "99", "100", liquidity="1"))  # fills 1 of 3
    broker.on_tick(tick(2, "101", "102", liquidity="1"))  # 1 more, at 102
    assert broker.portfolio() == [BrokerPosition(
        position_id="pos1", profile_id="p", symbol="BTCUSDT", side="BUY", qty=D("2"),
        entry_price=D("101"), sl_price=D("90"), order_id="o1")]

    assert broker.close_position("pos1")
    # a requested close is part of the position until it fills
    assert [p.closing for p in broker.portfolio()] == ["manual"]
    broker.on_tick(tick(3, "103", "104", liquidity="0"))
    assert broker.portfolio() == []
    exits = [e for e in events if isinstance(e, PositionExited)]
    assert [(e.qty, e.price, e.reason) for e in exits] == [(D("2"), D("103"), "manual")]
    # the rest of the entry order went with the position
    assert "o1" not in broker.working
    assert sum(e.qty for e in events if isinstance(e, EntryFilled)) == D("2")


def test_a_scale_in_that_arrives_after_its_position_exited_opens_nothing():
    """The ledger took a scale-in while the position was open; the position exits on a
    tick before the order reaches the broker. The order must not fill as a new
    position under the closed one's id (the ledger would never book it): it is
    canceled as the scale-ins working at the exit were."""
    events = []
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}),
                         clock=ManualClock(), emit=events.append)
    broker.init()
    broker.start()
    broker.submit_order(BrokerOrder(order_id="ord_a", profile_id="p", symbol="BTCUSDT",
                                    side="BUY", type="MARKET", qty=D("1"),
                                    position_id="pos_a", sl_price=D("90")))
    broker.on_tick(tick(1, "99", "100"))
    broker.on_tick(tick(2, "89", "90"))  # the stop-loss: pos_a is closed
    assert [e.reason for e in events if isinstance(e, PositionExited)] == ["sl"]
    events.clear()
    broker.submit_order(BrokerOrder(order_id="ord_b", profile_id="p", symbol="BTCUSDT",
                                    side="BUY", type="MARKET", qty=D("1"),
                                    position_id="pos_a"))
    broker.on_tick(tick(3, "99", "100"))
    assert broker.portfolio() == []
    assert not [e for e in events if isinstance(e, EntryFilled)]
    assert [(type(e).__name__, e.reason) for e in events
            if isinstance(e, OrderCanceled)] == [("OrderCanceled", "position closed")]
