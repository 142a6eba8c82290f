"""The pure Ledger: worked examples, and a hypothesis state machine that drives it with
random sequences and checks every invariant after every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capflow.actors.model.errors import Conflict, Denial, InvalidArgument, NotFound
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import (
    ACTIVE,
    CapitalDeposited,
    CapitalReserved,
    CapitalWithdrawn,
    OrderCapitalReleased,
    OrderCapitalReserved,
    OrderFilled,
    PositionReduced,
    ReservationExpired,
    ReservationReleased,
)
from capflow.actors.model.outcome import Outcome

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
D = Decimal


def new_ledger(allocated: str = "10000.00") -> Ledger:
    led = Ledger("p1", "USDT", 2)
    led.deposit(allocated, "seed", T0)
    return led


# -- worked examples -------------------------------------------------------------------

def test_hold_and_release_move_capital_between_available_and_held():
    led = new_ledger()
    out = led.reserve("r1", "k1", "BTCUSDT", "2500", 60, T0)
    assert isinstance(out, Outcome) and out.result.expires_at == T0 + timedelta(seconds=60)
    assert (led.held, led.available) == (D("2500.00"), D("7500.00"))
    led.release("r1", "done", T0)
    assert (led.held, led.available) == (D("0.00"), D("10000.00"))
    with pytest.raises(NotFound):
        led.release("r1", "again", T0)


def test_hold_beyond_available_is_a_denial_value_and_changes_nothing():
    led = new_ledger("100.00")
    before = led.buckets()
    out = led.reserve("r1", "k1", "BTCUSDT", "100.01", 60, T0)
    assert isinstance(out, Denial) and out.code == "INSUFFICIENT_CAPITAL"
    assert out.details == {"available": D("100.00"), "requested": D("100.01")}
    assert led.buckets() == before and not led.reservations


def test_idempotent_hold_returns_the_first_result_and_conflicts_on_other_content():
    led = new_ledger()
    first = led.reserve("r1", "k1", "ETHUSDT", "10", 60, T0)
    again = led.reserve("r2", "k1", "ETHUSDT", "10.00", 60, T0 + timedelta(seconds=5))
    assert again.reused and again.result == first.result and not again.events
    assert led.held == D("10.00")
    with pytest.raises(Conflict):
        led.reserve("r3", "k1", "ETHUSDT", "11", 60, T0)


def test_amounts_are_exact_and_bad_input_is_refused_with_the_field():
    led = new_ledger()
    for bad, field in (("1.001", "amount"), ("NaN", "amount"), ("-5", "amount"),
                       (float("inf"), "amount"), (True, "amount"), ("1e30", "amount")):
        with pytest.raises(InvalidArgument) as err:
            led.reserve("r", "k", "X", bad, 60, T0)
        assert err.value.field == field
    assert led.reserve("r", "k", "X", 0.1, 60, T0).result.amount == D("0.10")
    assert led.held == D("0.10") and not led.violations()


def test_expiry_releases_only_what_is_due():
    led = new_ledger()
    led.reserve("a", "ka", "X", "100", 10, T0)
    led.reserve("b", "kb", "X", "200", 20, T0)
    out = led.expire_due(T0 + timedelta(seconds=10))
    assert [h.reservation_id for h in out.result] == ["a"]
    assert isinstance(out.events[0], ReservationExpired)
    assert led.held == D("200.00") and led.next_expiry() == T0 + timedelta(seconds=20)


def test_order_from_a_hold_releases_the_excess_and_partial_fills_move_capital():
    led = new_ledger()
    led.reserve("r1", "k1", "BTCUSDT", "5100", 60, T0)
    led.reserve_order("o1", "BTCUSDT", "BUY", "0.1", "5000", T0, reservation_id="r1")
    assert (led.held, led.reserved_for_orders, led.available) == (
        D("0.00"), D("5000.00"), D("5000.00"))
    assert led.reservations["r1"].status == "CONSUMED"
    # 0.04 filled at 49,000: 40% of the order's 5,000 (2,000) pays for 1,960 + 1.00 fee
    led.fill_entry("f1", "o1", "pos1", "0.04", "49000", "1", T0)
    assert led.reserved_for_orders == D("3000.00")
    assert led.reserved_for_positions == D("1960.00")
    assert led.fees == D("1.00") and led.available == D("5039.00")
    # the rest at 51,000 costs more than its share: the extra comes from available
    led.fill_entry("f2", "o1", "pos1", "0.06", "51000", "1.5", T0)
    assert "o1" not in led.orders and led.reserved_for_orders == D("0.00")
    assert led.reserved_for_positions == D("5020.00")
    assert led.available == D("10000.00") - D("5020.00") - D("2.50")
    assert not led.violations()


def test_cancel_releases_the_unfilled_remainder():
    led = new_ledger()
    led.reserve_order("o1", "SOLUSDT", "BUY", "10", "1500", T0)
    led.fill_entry("f1", "o1", "pos1", "4", "150", "0", T0)
    out = led.end_order("o1", "CANCELED", T0)
    assert isinstance(out.events[0], OrderCapitalReleased)
    assert out.events[0].amount == D("900.00")
    assert led.reserved_for_orders == D("0.00") and led.reserved_for_positions == D("600.00")
    with pytest.raises(NotFound):
        led.end_order("o1", "CANCELED", T0)


def test_partial_exits_release_pro_rata_and_realize_exact_pnl():
    led = new_ledger("20000.00")
    led.reserve_order("o1", "BTCUSDT", "BUY", "0.3", "15000", T0)
    led.fill_entry("f1", "o1", "pos", "0.3", "49999.99", "0", T0)  # cost 15,000.00 (ceil)
    led.fill_exit("x1", "pos", "0.1", "51000", "1", T0)
    assert led.reserved_for_positions == D("10000.00")  # 1/3 of 15,000.00 released
    assert led.realized_pnl == D("100.00")  # 5,100 proceeds - 5,000 released
    out = led.fill_exit("x2", "pos", "0.2", "48000", "1", T0)
    closed = out.events[-1].position
    assert closed.status == "CLOSED" and led.reserved_for_positions == D("0.00")
    # closed position: realized PnL is exactly proceeds minus entry cost
    assert led.realized_pnl == D("5100.00") + D("9600.00") - D("15000.00")
    assert closed.realized_pnl == led.realized_pnl and led.fees == D("2.00")


def test_a_short_squeezed_past_its_reservation_is_booked_and_stops_new_exposure():
    led = new_ledger("1000.00")
    led.reserve_order("o1", "X", "SELL", "10", "1000", T0)
    led.fill_entry("f1", "o1", "pos", "10", "100", "0", T0)
    out = led.fill_exit("x1", "pos", "10", "250", "0", T0)  # loses 1,500 on 1,000 reserved
    assert led.realized_pnl == D("-1500.00") and led.available == D("-500.00")
    assert led.state == "REDUCE_ONLY" and out.events[-1].reason == "NEGATIVE_AVAILABLE"
    denied = led.reserve("r", "k", "X", "1", 60, T0)
    assert isinstance(denied, Denial) and denied.details["reason"] == "REDUCE_ONLY"


def test_halted_and_reduce_only_block_entries_but_not_exits_or_releases():
    led = new_ledger()
    led.reserve("r1", "k1", "X", "100", 60, T0)
    led.reserve_order("o1", "X", "BUY", "1", "100", T0)
    led.fill_entry("f1", "o1", "pos", "1", "100", "0", T0)
    led.set_state("HALTED", "kill switch", "ops", T0)
    assert led.reserve("r2", "k2", "X", "1", 60, T0).details["reason"] == "TRADING_HALTED"
    assert isinstance(led.reserve_order("o2", "X", "BUY", "1", "1", T0), Denial)
    led.release("r1", "client", T0)
    led.fill_exit("x1", "pos", "1", "110", "0", T0)
    assert led.realized_pnl == D("10.00") and not led.violations()


# -- the state machine -----------------------------------------------------------------

amounts = st.decimals(min_value=D("0.01"), max_value=D("5000"), places=2)
qtys = st.decimals(min_value=D("0.001"), max_value=D("50"), places=3)
prices = st.decimals(min_value=D("0.5"), max_value=D("70000"), places=2)
fractions = st.sampled_from([D("0.1"), D("0.25"), D("0.5"), D("0.9"), D("1")])
moves = st.sampled_from([D("0.5"), D("0.8"), D("0.97"), D("1"), D("1.03"), D("1.2"), D("1.5")])


class LedgerMachine(RuleBasedStateMachine):
    """Random sequences against one Ledger. After every step: no bucket negative,
    available >= 0, buckets equal the live objects, and buckets equal an independent
    derivation from every event emitted so far (what storage rebuilds from)."""

    def __init__(self):
        super().__init__()
        self.now = T0
        self.led = Ledger("p1", "USDT", 2)
        self.events = []
        self.n = 0
        self.denials = 0

    def _apply(self, out):
        if isinstance(out, Denial):
            self.denials += 1
            return out
        self.events.extend(out.events)
        return out

    def _id(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    @rule(amount=amounts)
    def deposit(self, amount):
        self._apply(self.led.deposit(amount, self._id("dep"), self.now))

    @rule(amount=amounts)
    def withdraw(self, amount):
        avail = self.led.available
        out = self._apply(self.led.withdraw(amount, self._id("wd"), self.now))
        assert isinstance(out, Denial) == (amount > avail)

    @rule(amount=amounts, ttl=st.integers(1, 600))
    def reserve(self, amount, ttl):
        avail = self.led.available
        out = self._apply(self.led.reserve(self._id("r"), self._id("k"), "BTCUSDT", amount,
                                        ttl, self.now))
        assert isinstance(out, Denial) == (amount > avail)

    @precondition(lambda self: any(h.status == ACTIVE for h in self.led.reservations.values()))
    @rule(data=st.data())
    def repeat_hold(self, data):
        h = data.draw(st.sampled_from(sorted(
            (h for h in self.led.reservations.values() if h.status == ACTIVE),
            key=lambda h: h.reservation_id)))
        before = self.led.buckets()
        out = self.led.reserve("other", h.client_request_id, h.symbol, h.amount, h.ttl_s,
                            self.now)
        assert out.reused and out.result.reservation_id == h.reservation_id
        assert self.led.buckets() == before

    @precondition(lambda self: any(h.status == ACTIVE for h in self.led.reservations.values()))
    @rule(data=st.data())
    def release(self, data):
        rid = data.draw(st.sampled_from(sorted(
            r for r, h in self.led.reservations.items() if h.status == ACTIVE)))
        self._apply(self.led.release(rid, "client", self.now))

    @rule(seconds=st.integers(1, 400))
    def time_passes(self, seconds):
        self.now += timedelta(seconds=seconds)
        self._apply(self.led.expire_due(self.now))
        assert all(h.expires_at > self.now for h in self.led.reservations.values()
                   if h.status == ACTIVE)

    @rule(data=st.data(), qty=qtys, amount=amounts, from_reservation=st.booleans(),
          side=st.sampled_from(["BUY", "SELL", "long", "short"]))
    def order(self, data, qty, amount, from_reservation, side):
        rid = None
        active = sorted(r for r, h in self.led.reservations.items() if h.status == ACTIVE)
        if from_reservation and active:
            rid = data.draw(st.sampled_from(active))
        self._apply(self.led.reserve_order(self._id("o"), "BTCUSDT", side, qty, amount,
                                           self.now, reservation_id=rid))

    @precondition(lambda self: self.led.orders)
    @rule(data=st.data(), fraction=fractions, price=prices, fee=st.sampled_from(
        [D("0"), D("0.01"), D("1.25")]), new_position=st.booleans())
    def entry_fill(self, data, fraction, price, fee, new_position):
        oid = data.draw(st.sampled_from(sorted(self.led.orders)))
        o = self.led.orders[oid]
        qty = max(D("0.001"), ((o.qty - o.filled_qty) * fraction).quantize(D("0.001")))
        qty = min(qty, o.qty - o.filled_qty)
        same = [p for p, pos in self.led.positions.items()
                if (pos.symbol, pos.side) == (o.symbol, o.side)]
        pid = self._id("pos") if new_position or not same else sorted(same)[0]
        self._apply(self.led.fill_entry(self._id("f"), oid, pid, qty, price, fee, self.now))

    @precondition(lambda self: self.led.orders)
    @rule(data=st.data(), status=st.sampled_from(["CANCELED", "REJECTED", "EXPIRED"]))
    def end_order(self, data, status):
        oid = data.draw(st.sampled_from(sorted(self.led.orders)))
        self._apply(self.led.end_order(oid, status, self.now))

    @precondition(lambda self: self.led.positions)
    @rule(data=st.data(), fraction=fractions, move=moves)
    def exit_fill(self, data, fraction, move):
        pid = data.draw(st.sampled_from(sorted(self.led.positions)))
        p = self.led.positions[pid]
        qty = min(p.qty_open, max(D("0.001"), (p.qty_open * fraction).quantize(D("0.001"))))
        price = max(D("0.01"), (p.entry_notional / p.qty_total * move).quantize(D("0.01")))
        fee = (qty * price * D("0.0005")).quantize(D("0.01"))
        self._apply(self.led.fill_exit(self._id("x"), pid, qty, price, fee, self.now))

    @invariant()
    def buckets_are_sound(self):
        assert self.led.violations() == []

    @invariant()
    def buckets_equal_the_event_derivation(self):
        allocated = realized = fees = D(0)
        holds, orders, positions = {}, {}, {}
        for e in self.events:
            if isinstance(e, CapitalDeposited | CapitalWithdrawn):
                allocated += e.transfer.amount
            elif isinstance(e, CapitalReserved | ReservationReleased | ReservationExpired):
                holds[e.reservation.reservation_id] = e.reservation
            elif isinstance(e, OrderCapitalReserved):
                orders[e.order.order_id] = e.order
                if e.consumed is not None:
                    holds[e.consumed.reservation_id] = e.consumed
            elif isinstance(e, OrderFilled):
                orders[e.order.order_id] = e.order
                positions[e.position.position_id] = e.position
                fees += e.fill.fee
            elif isinstance(e, OrderCapitalReleased):
                orders[e.order.order_id] = e.order
            elif isinstance(e, PositionReduced):
                positions[e.position.position_id] = e.position
                realized += e.fill.pnl
                fees += e.fill.fee
        led = self.led
        assert led.allocated == allocated
        assert led.realized_pnl == realized and led.fees == fees
        assert led.held == sum((h.amount for h in holds.values() if h.status == ACTIVE), D(0))
        assert led.reserved_for_orders == sum(
            (o.reserved for o in orders.values() if o.status in ("OPEN", "PARTIALLY_FILLED")),
            D(0))
        assert led.reserved_for_positions == sum(
            (p.reserved for p in positions.values() if p.status == "OPEN"), D(0))
        for p in positions.values():
            if p.status == "CLOSED":  # realized PnL of a closed position is exact
                proceeds = sum((e.fill.notional for e in self.events
                                if isinstance(e, PositionReduced)
                                and e.position.position_id == p.position_id), D(0))
                expected = (proceeds - p.entry_notional if p.side == "BUY"
                            else p.entry_notional - proceeds)
                assert p.realized_pnl == expected

    @invariant()
    def journal_sequence_has_no_gaps(self):
        assert [e.seq for e in self.events] == list(range(1, len(self.events) + 1))


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=60,
                                      deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
