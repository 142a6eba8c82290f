"""The paper broker's fill rules for each order type and time in force, one row a case:
the order, the ticks it meets (seconds after it was sent, bid, ask, liquidity), the fills
it gets and how it ends (still working, filled, or canceled and why).

No fees matter here and no slippage is set: a MARKET fills at the ask (BUY) or the bid
(SELL), a LIMIT at its limit or the better tick price.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from capflow.actors.model.clock import ManualClock
from capflow.actors.model.ticks import Tick
from capflow.brokers.config import AccountConfig
from capflow.brokers.events import BrokerOrder, EntryFilled, OrderCanceled, OrderTriggered
from capflow.brokers.paper import PaperBroker

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WORKING, FILLED = "working", "filled"
BEYOND = "beyond the reserved price"


def order(type="MARKET", side="BUY", qty="3", price=None, trigger=None, tif="GTC",
          expire_s=None, max_price="200"):
    return BrokerOrder(order_id="o1", profile_id="p", symbol="BTCUSDT", side=side, type=type,
                       qty=D(qty), price=None if price is None else D(price),
                       position_id="pos1", max_price=None if max_price is None
                       else D(max_price), trigger_price=None if trigger is None
                       else D(trigger), time_in_force=tif,
                       expire_at=None if expire_s is None else T0 + timedelta(
                           seconds=expire_s))


CASES = [
    # -- MARKET
    ("market fills at the ask", order(), [(1, "99", "100", "5")],
     [("3", "100")], FILLED),
    ("market partial fills over ticks", order(),
     [(1, "99", "100", "1"), (2, "100", "101", "1")], [("1", "100"), ("1", "101")], WORKING),
    ("market IOC fills what it can, cancels the rest", order(tif="IOC"),
     [(1, "99", "100", "1"), (2, "99", "100", "5")], [("1", "100")], "ioc_remainder"),
    ("market FOK short of liquidity fills nothing", order(tif="FOK"),
     [(1, "99", "100", "2"), (2, "99", "100", "5")], [], "fok_unfilled"),
    ("market FOK with the liquidity fills all", order(tif="FOK"),
     [(1, "99", "100", "3")], [("3", "100")], FILLED),
    ("market above its reserved price is canceled", order(max_price="99.5"),
     [(1, "99", "100", "5")], [], BEYOND),
    # -- LIMIT
    ("limit rests, then fills crossed", order("LIMIT", price="98"),
     [(1, "99", "100", "5"), (2, "97", "97.5", "5")], [("3", "97.5")], FILLED),
    ("limit partial fills", order("LIMIT", price="98"),
     [(1, "97", "97.5", "2"), (2, "97", "97.8", "2")], [("2", "97.5"), ("1", "97.8")],
     FILLED),
    ("limit IOC not crossed is canceled", order("LIMIT", price="98", tif="IOC"),
     [(1, "99", "100", "5")], [], "ioc_remainder"),
    ("limit IOC crossed fills what it can", order("LIMIT", price="98", tif="IOC"),
     [(1, "97", "97.5", "2")], [("2", "97.5")], "ioc_remainder"),
    ("limit FOK short of liquidity fills nothing", order("LIMIT", price="98", tif="FOK"),
     [(1, "97", "97.5", "2")], [], "fok_unfilled"),
    ("limit FOK crossed with the liquidity", order("LIMIT", price="98", tif="FOK"),
     [(1, "97", "97.5", "3")], [("3", "97.5")], FILLED),
    ("limit FOK not crossed is canceled", order("LIMIT", price="98", tif="FOK"),
     [(1, "99", "100", "5")], [], "fok_unfilled"),
    # -- STOP
    ("buy stop waits for its trigger", order("STOP", trigger="105"),
     [(1, "99", "100", "5"), (2, "103", "104.9", "5")], [], WORKING),
    ("buy stop touched fills at the market", order("STOP", trigger="105"),
     [(1, "99", "100", "5"), (2, "104.8", "105", "5")], [("3", "105")], FILLED),
    ("buy stop gapped through fills at the tick, not the trigger",
     order("STOP", trigger="105"), [(1, "99", "100", "5"), (2, "107", "107.5", "5")],
     [("3", "107.5")], FILLED),
    ("buy stop gapped past its reserved price is canceled",
     order("STOP", trigger="105", max_price="106"), [(1, "107", "107.5", "5")], [], BEYOND),
    ("sell stop gapped through fills at the bid", order("STOP", side="SELL", trigger="95"),
     [(1, "96", "96.2", "5"), (2, "94", "94.2", "5")], [("3", "94")], FILLED),
    ("a touched stop stays a market order", order("STOP", trigger="105"),
     [(1, "105", "105.2", "1"), (2, "100", "100.2", "1")], [("1", "105.2"), ("1", "100.2")],
     WORKING),
    ("stop IOC: the trigger tick, then the rest canceled", order("STOP", trigger="105",
                                                                 tif="IOC"),
     [(1, "99", "100", "1"), (2, "105", "105.2", "1")], [("1", "105.2")], "ioc_remainder"),
    ("stop FOK short of liquidity at its trigger", order("STOP", trigger="105", tif="FOK"),
     [(1, "99", "100", "1"), (2, "105", "105.2", "2")], [], "fok_unfilled"),
    # -- STOP_LIMIT
    ("stop-limit waits for its trigger", order("STOP_LIMIT", price="105.5", trigger="105"),
     [(1, "98", "98.5", "5")], [], WORKING),
    ("stop-limit touched becomes a limit that crosses",
     order("STOP_LIMIT", price="105.5", trigger="105"),
     [(1, "99", "100", "5"), (2, "105", "105.2", "5")], [("3", "105.2")], FILLED),
    ("stop-limit gapped past its limit rests at it",
     order("STOP_LIMIT", price="105.5", trigger="105"),
     [(1, "107", "107.5", "5"), (2, "105.3", "105.4", "5")], [("3", "105.4")], FILLED),
    ("stop-limit IOC gapped past its limit is canceled",
     order("STOP_LIMIT", price="105.5", trigger="105", tif="IOC"),
     [(1, "99", "100", "5"), (2, "107", "107.5", "5")], [], "ioc_remainder"),
    ("sell stop-limit partial fills", order("STOP_LIMIT", side="SELL", price="94.5",
                                            trigger="95"),
     [(1, "94.8", "95", "2"), (2, "94.6", "94.7", "2")], [("2", "94.8"), ("1", "94.6")],
     FILLED),
    # -- GTD
    ("GTD works until its time", order("LIMIT", price="98", tif="GTD", expire_s=10),
     [(5, "99", "100", "5"), (9, "99", "100", "5")], [], WORKING),
    ("GTD expires at its time, before the tick of that time fills it",
     order("LIMIT", price="98", tif="GTD", expire_s=10),
     [(5, "99", "100", "5"), (10, "97", "97.5", "5")], [], "expired"),
    ("GTD partly filled expires with its rest", order(tif="GTD", expire_s=10),
     [(1, "99", "100", "1"), (11, "99", "100", "1")], [("1", "100")], "expired"),
    ("GTD stop expires untriggered", order("STOP", trigger="105", tif="GTD", expire_s=10),
     [(5, "99", "100", "5"), (12, "106", "106.2", "5")], [], "expired"),
]


def run(o: BrokerOrder, ticks) -> tuple[PaperBroker, list]:
    events: list = []
    clock = ManualClock(T0)
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}), clock=clock,
                         emit=events.append)
    broker.init()
    broker.start()
    broker.submit_order(o)
    for n, (at, bid, ask, liquidity) in enumerate(ticks, start=1):
        clock.set(T0 + timedelta(seconds=at))
        broker.on_tick(Tick("BTCUSDT", n, clock.now(), D(bid), D(ask), D(bid), D(liquidity)))
    return broker, events


@pytest.mark.parametrize(("o", "ticks", "fills", "end"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_fill_rules(o, ticks, fills, end):
    broker, events = run(o, ticks)
    assert [(e.qty, e.price) for e in events if isinstance(e, EntryFilled)] == [
        (D(q), D(p)) for q, p in fills]
    canceled = [e.reason for e in events if isinstance(e, OrderCanceled)]
    if end == WORKING:
        assert "o1" in broker.working and canceled == []
    elif end == FILLED:
        assert "o1" not in broker.working and canceled == []
    else:
        assert "o1" not in broker.working
        assert len(canceled) == 1 and end in canceled[0]


def test_a_gtd_order_expires_without_a_tick_of_its_symbol():
    """The account manager steps the adapter on a timer: expiry needs no market."""
    broker, events = run(order("LIMIT", price="98", tif="GTD", expire_s=10), [])
    broker.clock.set(T0 + timedelta(seconds=9))
    broker.step()
    assert "o1" in broker.working
    broker.clock.set(T0 + timedelta(seconds=10))
    broker.step()
    assert [e.reason for e in events if isinstance(e, OrderCanceled)] == ["expired"]
    assert "o1" not in broker.working


def test_restored_orders_past_their_expiry_end_at_once():
    events: list = []
    clock = ManualClock(T0 + timedelta(seconds=60))
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}), clock=clock,
                         emit=events.append)
    broker.init()
    broker.start()
    late = order("LIMIT", price="98", tif="GTD", expire_s=30)
    later = BrokerOrder(**{**{f: getattr(late, f) for f in late.__struct_fields__},
                           "order_id": "o2", "expire_at": T0 + timedelta(seconds=90)})
    broker.restore([late, later], [])
    assert [(e.order_id, e.reason) for e in events if isinstance(e, OrderCanceled)] == [
        ("o1", "expired")]
    assert list(broker.working) == ["o2"]


def test_a_touched_stop_says_so_once_and_a_restored_touched_one_trades_at_once():
    broker, events = run(order("STOP_LIMIT", price="101", trigger="102"),
                         [(1, "99", "100", "5"), (2, "102.4", "102.5", "5"),
                          (3, "102.6", "102.7", "5")])
    assert [(e.order_id, e.price) for e in events if isinstance(e, OrderTriggered)] == [
        ("o1", D("102.5"))]
    assert "o1" in broker.working  # a limit at 101 now, not crossed yet

    touched = BrokerOrder(**{**{f: getattr(order("STOP_LIMIT", price="101", trigger="102"),
                                            f) for f in BrokerOrder.__struct_fields__},
                             "triggered": True})
    events: list = []
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}),
                         clock=ManualClock(T0), emit=events.append)
    broker.init()
    broker.start()
    broker.restore([touched], [])
    broker.on_tick(Tick("BTCUSDT", 1, T0, D("100.8"), D("100.9"), D("100.8"), D("5")))
    assert [(e.qty, e.price) for e in events if isinstance(e, EntryFilled)] == [
        (D("3"), D("100.9"))]
    assert not [e for e in events if isinstance(e, OrderTriggered)]


def test_a_restored_ioc_order_that_filled_in_part_is_not_worked_again():
    """Killed between an IOC's fill and its remainder's cancel: the fill was booked, the
    cancel was not. At the restart the remainder ends (``ioc_remainder``); it never
    trades on a second tick."""
    events: list = []
    broker = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}),
                         clock=ManualClock(T0), emit=events.append)
    broker.init()
    broker.start()
    part = BrokerOrder(**{**{f: getattr(order(tif="IOC"), f)
                             for f in BrokerOrder.__struct_fields__}, "filled_qty": D("1")})
    fresh = BrokerOrder(**{**{f: getattr(order(tif="IOC"), f)
                              for f in BrokerOrder.__struct_fields__}, "order_id": "o2",
                           "position_id": "pos2"})
    broker.restore([part, fresh], [])
    broker.on_tick(Tick("BTCUSDT", 1, T0, D("99"), D("100"), D("99"), D("50")))
    assert [(e.order_id, e.reason) for e in events if isinstance(e, OrderCanceled)] == [
        ("o1", "ioc_remainder")]
    assert [(e.order_id, e.qty) for e in events if isinstance(e, EntryFilled)] == [
        ("o2", D("3"))]
    assert broker.working == {}


def test_stops_set_without_a_trail_leave_the_trail_where_it_has_moved():
    """position.set_stops of a take-profit or stop-loss only: the broker keeps its own
    trail (its best price and stop), not the ledger's copy, which may be a tick
    behind it."""
    from capflow.actors.model.trailing import advance, parse_trail
    from capflow.brokers.events import BrokerPosition

    b = PaperBroker("acct", AccountConfig(settings={"slippage_bps": "0"}),
                    clock=ManualClock(T0), emit=[].append)
    b.init()
    b.start()
    trail = advance("BUY", parse_trail(amount="2"), D("104"))
    b.restore([], [BrokerPosition(position_id="pos_t", profile_id="p", symbol="SOLUSDT",
                                  side="BUY", qty=D("1"), entry_price=D("100"),
                                  trail=trail)])
    assert b.set_stops("pos_t", None, D("95"))
    kept = b.positions["pos_t"]
    assert (kept.sl_price, kept.trail) == (D("95"), trail)
    assert b.set_stops("pos_t", None, D("95"), trail=None)  # asked: cleared
    assert b.positions["pos_t"].trail is None
