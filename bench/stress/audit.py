"""The audit of a stress run: through the wire and directly in storage.

Storage (`audit_storage`, read with the database owned by nobody, so in one quiet
state):

- every ledger snapshot equals what its rows imply (`LedgerStore.rebuild`: transfers,
  active reservations, open orders, open positions, fills);
- no bucket is negative (allocated, held, both reservations, fees, available; realized
  PnL is signed), and no row carries a negative amount or more filled than ordered;
- no idempotency key produced two objects: at most one order per signal, one position
  per order, every signal's order exists; and in the bots' acknowledgements one key
  never came back with two different ids;
- every acknowledged mutation is in storage: each reservation with its key, symbol and
  amount, each release as RELEASED, each signal (its decision, and its order when it
  was traded), each close as recorded on its position (and, `closes=True`, at the
  end: CLOSED, by the close and not by a take-profit or stop-loss); a repeat of an
  acknowledged mutation answered anything but the same object is a violation.

Wire (`audit_wire`): each ledger as `ledger.get` shows it equals what `order.list` and
`position.list` imply (reserved for orders and positions, realized PnL, fees), its
`available` follows from the buckets, and no bucket is negative.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ZERO = Decimal(0)
NON_NEGATIVE = ("allocated", "held", "reserved_for_orders", "reserved_for_positions", "fees")
BUCKETS = ("allocated", "held", "reserved_for_orders", "reserved_for_positions",
           "realized_pnl", "fees")
MAX_LISTED = 200


@dataclass
class Audit:
    violations: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, text: str) -> None:
        self.violations.append(text)

    def count(self, name: str, n: int = 1) -> None:
        self.checked[name] += n

    def merge(self, other: Audit, prefix: str = "") -> None:
        self.violations += [f"{prefix}{v}" for v in other.violations]
        for k, v in other.checked.items():
            self.checked[f"{prefix}{k}"] += v

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "violations": self.violations[:MAX_LISTED],
                "violation_count": len(self.violations), "checked": dict(self.checked)}


def read_acks(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every bot's acknowledged mutations, in no particular order across bots."""
    acks = []
    for path in sorted(Path(run_dir).glob("bot-*.acks.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    acks.append(json.loads(line))
                except json.JSONDecodeError:  # a bot killed mid-line: not acknowledged
                    continue
    return acks


# -- storage ------------------------------------------------------------------------------


def _available(b) -> Decimal:
    return (b.allocated + b.realized_pnl - b.fees - b.held - b.reserved_for_orders
            - b.reserved_for_positions)


def audit_storage(url: str, acks: Iterable[dict[str, Any]] = (), *, closes: bool = False,
                  places_for=None) -> Audit:
    """Audit a database that no process is writing (see `owner_quiet`)."""
    from sqlalchemy import select

    from capflow.storage import schema as s
    from capflow.storage.engine import open_engine
    from capflow.storage.ledger_store import LedgerStore

    a = Audit()
    engine = open_engine(url)
    try:
        store = LedgerStore(engine, places_for or (lambda _currency: 2))
        snaps, rebuilt = store.snapshots(), store.rebuild()
        with engine.connect() as c:
            reservations = {r.reservation_id: r for r in c.execute(select(s.reservations))}
            orders = {r.order_id: r for r in c.execute(select(s.orders))}
            positions = {r.position_id: r for r in c.execute(select(s.positions))}
            signals = {(r.profile_id, r.signal_id): r for r in c.execute(select(s.signals))}
    except Exception as exc:  # a row that does not even parse is a finding, not a crash
        a.fail(f"storage could not be read: {type(exc).__name__}: {exc}")
        return a
    finally:
        engine.dispose()

    for pid in sorted(set(snaps) | set(rebuilt)):
        snap, rows = snaps.get(pid), rebuilt.get(pid)
        a.count("ledgers")
        if snap is None or rows is None:
            a.fail(f"ledger {pid}: {'no snapshot' if snap is None else 'no profile row'}")
            continue
        for name in BUCKETS:
            if getattr(snap, name) != getattr(rows, name):
                a.fail(f"ledger {pid}: {name} is {getattr(snap, name)} in the snapshot but "
                       f"the rows imply {getattr(rows, name)}")
        for name in NON_NEGATIVE:
            if getattr(snap, name) < 0:
                a.fail(f"ledger {pid}: {name} is negative ({getattr(snap, name)})")
        if _available(snap) < 0:
            a.fail(f"ledger {pid}: available is negative ({_available(snap)})")

    for r in reservations.values():
        a.count("reservation rows")
        if r.amount <= 0:
            a.fail(f"reservation {r.reservation_id}: amount {r.amount} is not positive")
    by_signal: dict[tuple[str, str], list[str]] = defaultdict(list)
    for o in orders.values():
        a.count("order rows")
        if o.reserved < 0 or o.qty <= 0 or o.filled_qty < 0 or o.filled_qty > o.qty:
            a.fail(f"order {o.order_id}: reserved {o.reserved}, qty {o.qty}, filled "
                   f"{o.filled_qty}")
        if o.signal_id is not None:
            by_signal[(o.profile_id, o.signal_id)].append(o.order_id)
    for (pid, sid), ids in by_signal.items():
        if len(ids) > 1:
            a.fail(f"signal {pid}/{sid} produced {len(ids)} orders: {sorted(ids)}")
    by_order: dict[str, list[str]] = defaultdict(list)
    for p in positions.values():
        a.count("position rows")
        if p.reserved < 0 or p.qty_open < 0 or p.qty_open > p.qty_total or p.fees < 0:
            a.fail(f"position {p.position_id}: reserved {p.reserved}, open {p.qty_open} of "
                   f"{p.qty_total}, fees {p.fees}")
        if p.status == "CLOSED" and (p.qty_open != 0 or p.reserved != 0):
            a.fail(f"position {p.position_id} is CLOSED with {p.qty_open} open and "
                   f"{p.reserved} reserved")
        if p.order_id is not None:
            by_order[p.order_id].append(p.position_id)
    for oid, ids in by_order.items():
        if len(ids) > 1:
            a.fail(f"order {oid} opened {len(ids)} positions: {sorted(ids)}")
    for (pid, sid), sig in signals.items():
        a.count("signal rows")
        if sig.risk_ok and sig.order_id not in orders:
            a.fail(f"signal {pid}/{sid} was traded but its order {sig.order_id} is missing")

    _audit_acks(a, list(acks), reservations, orders, positions, signals, closes)
    return a


def _audit_acks(a: Audit, acks, reservations, orders, positions, signals,
                closes: bool) -> None:
    keys: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for ack in acks:
        op, pid = ack["op"], ack["pid"]
        a.count(f"acknowledged {op}")
        if op == "reserve":
            keys[("reserve", pid, ack["key"])].add(ack["rid"])
            row = reservations.get(ack["rid"])
            if row is None:
                a.fail(f"lost: reservation {ack['rid']} (key {ack['key']}) was acknowledged "
                       "but is not in storage")
            elif (row.profile_id, row.client_request_id, row.symbol, row.amount) != (
                    pid, ack["key"], ack["symbol"], Decimal(ack["amount"])):
                a.fail(f"reservation {ack['rid']} in storage ({row.profile_id}, "
                       f"{row.client_request_id}, {row.symbol}, {row.amount}) differs from "
                       f"its acknowledgement {ack}")
        elif op == "release":
            row = reservations.get(ack["rid"])
            if row is None or row.status != "RELEASED":
                a.fail(f"lost: release of {ack['rid']} was acknowledged but the reservation "
                       f"is {'missing' if row is None else row.status}")
        elif op == "signal":
            if ack.get("order_id"):
                keys[("signal", pid, ack["sid"])].add(ack["order_id"])
            sig = signals.get((pid, ack["sid"]))
            if sig is None:
                a.fail(f"lost: signal {pid}/{ack['sid']} was acknowledged but is not "
                       "in storage")
            elif bool(sig.risk_ok) != bool(ack["risk_ok"]) or (
                    ack["risk_ok"] and sig.order_id != ack["order_id"]):
                a.fail(f"signal {pid}/{ack['sid']}: storage says risk_ok {sig.risk_ok}, "
                       f"order {sig.order_id}; the answer said {ack['risk_ok']}, "
                       f"{ack['order_id']}")
            if ack["risk_ok"] and ack["order_id"] not in orders:
                a.fail(f"lost: order {ack['order_id']} of signal {pid}/{ack['sid']} was "
                       "acknowledged but is not in storage")
        elif op == "close":
            # recorded before the broker is asked, so it is in storage from the answer on;
            # the paper broker then exits it as "manual" (a requested close goes first)
            row = positions.get(ack["position_id"])
            if row is None:
                a.fail(f"lost: position {ack['position_id']} of an acknowledged close is "
                       "not in storage")
            elif row.status == "CLOSED" and row.close_reason != "manual":
                a.fail(f"lost: position {ack['position_id']}: its close was acknowledged "
                       f"but it was closed by {row.close_reason}")
            elif row.status != "CLOSED" and (closes or row.close_requested is None):
                a.fail(f"lost: position {ack['position_id']}: its close was acknowledged "
                       f"but it is {row.status}"
                       + ("" if row.close_requested else " with no close recorded"))
        elif op == "repeat_refused":
            a.fail(f"duplicate: a repeat of {pid}/{ack['key']} with the same content was "
                   f"answered {ack['code']}")
    for (kind, pid, key), ids in keys.items():
        a.count("idempotency keys")
        if len(ids) > 1:
            a.fail(f"duplicate: {kind} key {pid}/{key} was answered with {len(ids)} "
                   f"different ids: {sorted(ids)}")


# -- the wire -----------------------------------------------------------------------------


def list_all(client, op: str, key: str, profile_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        args = {"profile_id": profile_id, "limit": 1000}
        if cursor:
            args["cursor"] = cursor
        page = client.call(op, **args)
        items += page[key]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def wire_reading(client, profile_id: str, attempts: int = 10):
    """(ledger, orders, positions) of a profile, read until the ledger did not change
    while the lists were read (the market keeps trading meanwhile)."""
    for _ in range(attempts):
        before = client.call("ledger.get", profile_id=profile_id)
        orders = list_all(client, "order.list", "orders", profile_id)
        positions = list_all(client, "position.list", "positions", profile_id)
        after = client.call("ledger.get", profile_id=profile_id)
        if before == after:
            return after, orders, positions
    return None


def audit_wire(client, profile_ids: Iterable[str]) -> tuple[Audit, dict[str, dict]]:
    """The wire audit, and each ledger as read (decimal strings)."""
    a = Audit()
    ledgers: dict[str, dict] = {}
    for pid in profile_ids:
        reading = wire_reading(client, pid)
        a.count("ledgers (wire)")
        if reading is None:
            a.fail(f"ledger {pid}: never read twice the same (the wire audit needs a "
                   "moment without fills)")
            continue
        led, orders, positions = reading
        ledgers[pid] = led
        b = {k: Decimal(led[k]) for k in (*BUCKETS, "available")}
        implied = {
            "reserved_for_orders": sum((Decimal(o["reserved"]) for o in orders
                                        if o["status"] in ("OPEN", "PARTIALLY_FILLED")), ZERO),
            "reserved_for_positions": sum((Decimal(p["reserved"]) for p in positions
                                           if p["status"] == "OPEN"), ZERO),
            "realized_pnl": sum((Decimal(p["realized_pnl"]) for p in positions), ZERO),
            "fees": sum((Decimal(p["fees"]) for p in positions), ZERO),
        }
        a.count("orders (wire)", len(orders))
        a.count("positions (wire)", len(positions))
        for name, value in implied.items():
            if b[name] != value:
                a.fail(f"ledger {pid} (wire): {name} is {b[name]} but its orders and "
                       f"positions imply {value}")
        for name in (*NON_NEGATIVE, "available"):
            if b[name] < 0:
                a.fail(f"ledger {pid} (wire): {name} is negative ({b[name]})")
        expected = (b["allocated"] + b["realized_pnl"] - b["fees"] - b["held"]
                    - b["reserved_for_orders"] - b["reserved_for_positions"])
        if b["available"] != expected:
            a.fail(f"ledger {pid} (wire): available is {b['available']}, the buckets give "
                   f"{expected}")
    return a, ledgers


def compare_ledgers(wire: dict[str, dict], url: str) -> Audit:
    """The last wire reading of each ledger against the stored snapshot (after the
    server stopped with nothing moving in between)."""
    from capflow.storage.engine import open_engine
    from capflow.storage.ledger_store import LedgerStore

    a = Audit()
    engine = open_engine(url)
    try:
        snaps = LedgerStore(engine, lambda _c: 2).snapshots(list(wire))
    finally:
        engine.dispose()
    for pid, led in wire.items():
        a.count("ledgers (wire = storage)")
        snap = snaps.get(pid)
        if snap is None:
            a.fail(f"ledger {pid}: answered on the wire but not in storage")
            continue
        for name in BUCKETS:
            if Decimal(led[name]) != getattr(snap, name):
                a.fail(f"ledger {pid}: {name} was {led[name]} on the wire, "
                       f"{getattr(snap, name)} in storage")
    return a
