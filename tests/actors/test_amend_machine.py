"""A state machine over the pure `Ledger`: LIMIT entries, amends, scale-ins, partial
entry fills, partial exits and cancels, in any order. After every step: the ledger's own
invariants (`Ledger.violations`), available capital never below zero while entries
are taken, the buckets equal to a rebuild from the rows its events write
(`storage.rows.rows_for`, summed as `LedgerStore.rebuild` sums them), and every closed
position's realized PnL exactly its exit proceeds less its entry cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capflow.actors.model.amend import Pricing, reservation_for
from capflow.actors.model.errors import CapflowError, Denial
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import ACTIVE, Buckets
from capflow.actors.model.orders import OrderSpec
from capflow.storage.rows import rows_for

D = Decimal
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PRICING = Pricing(bid=None, ask=None, buffer_pct=D(1), taker_fee=D("0.001"),
                  maker_fee=D("0.0005"), places=2, price_places=2)
OPEN = ("OPEN", "PARTIALLY_FILLED")

qtys = st.integers(1, 40).map(lambda n: D(n) / 10)
prices = st.integers(5000, 15000).map(lambda n: D(n) / 100)
fractions = st.sampled_from([D("0.25"), D("0.5"), D("1")])


def rebuild(tables: dict) -> Buckets:
    """What `LedgerStore.rebuild` sums, over rows kept in dicts."""
    def total(rows, field, keep=lambda r: True):
        return sum((r[field] for r in rows if keep(r)), D(0))
    return Buckets(
        allocated=total(tables["transfers"], "amount"),
        held=total(tables["reservations"].values(), "amount",
                   lambda r: r["status"] == ACTIVE),
        reserved_for_orders=total(tables["orders"].values(), "reserved",
                                  lambda r: r["status"] in OPEN),
        reserved_for_positions=total(tables["positions"].values(), "reserved",
                                     lambda r: r["status"] == "OPEN"),
        realized_pnl=total(tables["fills"], "pnl"), fees=total(tables["fills"], "fee"))


class AmendMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.led = Ledger("p1", "USDT", 2)
        self.n = 0
        self.tables = {"transfers": [], "fills": [], "reservations": {}, "orders": {},
                       "positions": {}}
        self.proceeds: dict[str, Decimal] = {}
        self._apply(self.led.deposit("3000", "seed", T0))

    def _apply(self, out):
        if isinstance(out, Denial):
            return out
        for _op, table, row in rows_for(out.events):
            if table in ("transfers", "fills"):
                self.tables[table].append(row)
            elif table in ("orders", "positions", "reservations"):
                key = {"orders": "order_id", "positions": "position_id",
                       "reservations": "reservation_id"}[table]
                self.tables[table][row[key]] = row
        return out

    def _id(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def _open(self, qty, price, side, position_id=None):
        oid = self._id("ord")
        spec = OrderSpec(order_id=oid, position_id=position_id or oid.replace("ord", "pos"),
                         symbol="BTCUSDT", side=side, type="LIMIT", qty=qty, price=price)
        amount, cap = reservation_for("LIMIT", side, qty, price, price, None, PRICING)
        spec = OrderSpec(**{**{f: getattr(spec, f) for f in spec.__struct_fields__},
                            "max_price": cap})
        return self._apply(self.led.open_order(spec, amount, T0))

    @rule(qty=qtys, price=prices, side=st.sampled_from(["BUY", "SELL"]))
    def entry(self, qty, price, side):
        self._open(qty, price, side)

    @precondition(lambda self: self.led.positions)
    @rule(data=st.data(), qty=qtys, price=prices)
    def scale_in(self, data, qty, price):
        pid = data.draw(st.sampled_from(sorted(self.led.positions)))
        self._open(qty, price, self.led.positions[pid].side, position_id=pid)

    @precondition(lambda self: self.led.orders)
    @rule(data=st.data(), qty=st.one_of(st.none(), qtys), price=st.one_of(st.none(), prices))
    def amend(self, data, qty, price):
        oid = data.draw(st.sampled_from(sorted(self.led.orders)))
        o = self.led.orders[oid]
        q, px = qty or o.qty, price or o.price
        before = self.led.buckets()
        if q <= o.filled_qty:
            try:
                self.led.amend_order(oid, q, px, None, D(1), px, o.filled_qty, T0)
            except CapflowError as exc:
                assert exc.code == "INVALID_ARGUMENT"
                assert self.led.buckets() == before
                return
            raise AssertionError("an amend below what filled was taken")
        amount, cap = reservation_for("LIMIT", o.side, q - o.filled_qty, px, px, None,
                                      PRICING)
        out = self._apply(self.led.amend_order(oid, q, px, None, amount, cap, o.filled_qty,
                                               T0))
        if isinstance(out, Denial):
            assert out.code == "INSUFFICIENT_CAPITAL"
            assert self.led.buckets() == before and self.led.orders[oid] == o
        else:
            assert self.led.orders[oid].reserved == amount

    @precondition(lambda self: self.led.orders)
    @rule(data=st.data(), fraction=fractions, price=prices)
    def entry_fill(self, data, fraction, price):
        oid = data.draw(st.sampled_from(sorted(self.led.orders)))
        o = self.led.orders[oid]
        left = o.qty - o.filled_qty
        qty = max(D("0.1"), (left * fraction).quantize(D("0.1")))
        fill_price = min(price, o.price) if o.side == "BUY" else max(price, o.price)
        fee = (qty * fill_price * D("0.0005")).quantize(D("0.01"))
        try:
            self._apply(self.led.fill_entry(self._id("f"), oid, o.position_id, min(qty, left),
                                            fill_price, fee, T0))
        except CapflowError as exc:  # a scale-in whose position closed first
            assert exc.code == "CONFLICT" and o.position_id not in self.led.positions

    @precondition(lambda self: self.led.orders)
    @rule(data=st.data())
    def cancel(self, data):
        oid = data.draw(st.sampled_from(sorted(self.led.orders)))
        self._apply(self.led.end_order(oid, "CANCELED", T0))

    @precondition(lambda self: self.led.positions)
    @rule(data=st.data(), fraction=fractions, price=prices)
    def exit(self, data, fraction, price):
        pid = data.draw(st.sampled_from(sorted(self.led.positions)))
        p = self.led.positions[pid]
        qty = min(p.qty_open, max(D("0.1"), (p.qty_open * fraction).quantize(D("0.1"))))
        out = self._apply(self.led.fill_exit(self._id("x"), pid, qty, price, "0", T0))
        self.proceeds[pid] = self.proceeds.get(pid, D(0)) + out.result.notional
        if pid not in self.led.positions:  # closed: as a broker does, its entry and
            for o in list(self.led.orders.values()):  # scale-in orders end with it
                if o.position_id == pid:
                    self._apply(self.led.end_order(o.order_id, "CANCELED", T0))

    @invariant()
    def sound(self):
        led = self.led
        assert led.violations() == []
        assert led.available >= 0 or led.state != "ACTIVE"
        assert led.buckets() == rebuild(self.tables)
        assert led.reserved_for_orders == sum((o.reserved for o in led.orders.values()),
                                              D(0))
        for o in led.orders.values():
            assert o.filled_qty < o.qty
        for row in self.tables["positions"].values():
            if row["status"] == "CLOSED":
                cost, gained = row["entry_notional"], self.proceeds[row["position_id"]]
                assert row["realized_pnl"] == (gained - cost if row["side"] == "BUY"
                                               else cost - gained)


TestAmendMachine = AmendMachine.TestCase
TestAmendMachine.settings = settings(max_examples=150, stateful_step_count=50,
                                     deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
