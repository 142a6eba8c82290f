"""The trailing stop's rules, pure (actors/model/trailing.py): a short mirrors a long,
a percentage rounds towards the market, the activation waits, the stop never goes back,
and what cannot be a trail is refused by field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.ledger_stops import move_trail, set_stops
from capflow.actors.model.orders import OrderSpec
from capflow.actors.model.stop_messages import MoveTrail, SetStops
from capflow.actors.model.trailing import (
    Trail,
    advance,
    check_stops,
    hit,
    parse_trail,
)


def _walk(side: str, trail: Trail, prices: list[str]) -> list[tuple[str | None, bool]]:
    out = []
    for price in prices:
        px = D(price)
        fired = hit(side, trail, px)
        if not fired:
            trail = advance(side, trail, px)
        out.append((None if trail.stop is None else str(trail.stop), fired))
    return out


def test_a_short_trails_the_lowest_ask_by_a_percentage_rounded_down():
    # 1 % above the lowest ask: 50.00 -> 50.50; 49.37 -> 49.8637 -> 49.86 (down, nearer
    # the market); 49.90 is above the stop: not yet (>= 49.86 triggers); 49.86 triggers
    trail = parse_trail(pct="1")
    assert _walk("SELL", trail, ["50.00", "49.37", "49.60", "49.85", "49.86"]) == [
        ("50.50", False), ("49.86", False), ("49.86", False), ("49.86", False),
        ("49.86", True)]


def test_a_long_by_a_percentage_rounds_up_and_waits_for_its_activation():
    # activation at a bid of 105: 104.99 waits; 105.00 -> 105 * 0.985 = 103.425 -> 103.43
    trail = parse_trail(pct="1.5", activation="105")
    assert _walk("BUY", trail, ["104.99", "105.00", "104.00", "106.10", "103.43"]) == [
        (None, False), ("103.43", False), ("103.43", False), ("104.51", False),
        ("104.51", True)]


def test_an_unchanged_trail_is_the_same_object_and_a_stop_never_goes_back():
    trail = advance("BUY", parse_trail(amount="2"), D("100"))
    assert (trail.best, trail.stop) == (D("100"), D("98"))
    assert advance("BUY", trail, D("99")) is trail
    # a trail whose step is coarser than the price (places): the stop stays where it was
    moved = advance("BUY", trail, D("100.4"), places=0)
    assert (moved.best, moved.stop) == (D("100.4"), D("99"))
    assert advance("BUY", moved, D("100.1"), places=0) is moved


@pytest.mark.parametrize(("fields", "field"), [
    ({"amount": "1", "pct": "1"}, "trail_amount"),
    ({"pct": "100"}, "trail_pct"),
    ({"amount": "0"}, "trail_amount"),
    ({"amount": "-1"}, "trail_amount"),
    ({"activation": "100"}, "trail_activation"),
    ({"pct": "1", "activation": "0"}, "trail_activation"),
])
def test_what_cannot_be_a_trail_is_refused_by_field(fields, field):
    with pytest.raises(InvalidArgument) as e:
        parse_trail(**fields)
    assert e.value.details["field"] == field


def test_stops_of_an_open_position_are_checked_against_its_exit_side():
    check_stops("BUY", D("101"), D("99"), D("100"), D("100.2"))
    check_stops("SELL", D("99"), D("101"), D("99.8"), D("100"))
    for side, tp, sl, field in (("BUY", None, "100", "sl_price"),
                                ("BUY", "100", None, "tp_price"),
                                ("SELL", None, "100", "sl_price"),
                                ("SELL", "100", None, "tp_price")):
        with pytest.raises(InvalidArgument) as e:
            check_stops(side, tp and D(tp), sl and D(sl), D("100"), D("100"))
        assert e.value.details["field"] == field
    with pytest.raises(InvalidArgument):  # no market: the two against each other
        check_stops("BUY", D("99"), D("100"), None, None)


def _ledger_with_a_trailed_long():
    now = datetime(2026, 1, 5, tzinfo=UTC)
    led = Ledger("p", "USDT", 2)
    led.deposit("10000", "init", now)
    # the ids an entry gets: its position's is its order's with pos_ for ord_ (an order
    # whose position id is another's adds to that position: a scale-in)
    spec = OrderSpec(order_id="ord_1", position_id="pos_1", symbol="SOLUSDT", side="BUY",
                     qty=D("10"), trail_amount=D("2"))
    led.open_order(spec, "1500", now)
    led.fill_entry("f1", "ord_1", "pos_1", "10", "100", "0", now)
    return led, now


def test_a_move_of_a_trail_that_was_replaced_meanwhile_is_left_out():
    led, now = _ledger_with_a_trailed_long()
    old = advance("BUY", parse_trail(amount="2"), D("104"))
    moved = move_trail(led, MoveTrail(position_id="pos_1", trail=old), now)
    assert (moved.result.trail_best, moved.result.trail_stop) == (D("104"), D("102"))
    assert move_trail(led, MoveTrail(position_id="pos_1", trail=old), now).reused
    # the trail is replaced by hand while the broker reports a move of the old one
    set_stops(led, SetStops(position_id="pos_1", trail=parse_trail(pct="1")), now)
    later = advance("BUY", old, D("106"))
    assert move_trail(led, MoveTrail(position_id="pos_1", trail=later), now).reused
    p = led.positions["pos_1"]
    assert (p.trail_amount, p.trail_pct, p.trail_best, p.trail_stop) == (
        None, D("1"), None, None)
