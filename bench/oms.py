"""Order flow per second through the embedded System, durable, against a bare baseline.

    python bench/oms.py [--ticks 100000] [--profiles 4] [--orders-per-tick 1]
                        [--sync FULL|NORMAL] [--pin] [--json FILE]

Both figures run capflow in this process (`System`) with durable storage (SQLite in a
temporary directory, synchronous=FULL unless ``--sync NORMAL``), the default paper
account and the market simulator in step mode, over ``--ticks`` ticks. Per tick,
``--orders-per-tick`` MARKET orders, round robin over the profiles (each allocated
10**9 USDT) and the simulator's symbols, sides alternating, are submitted without
waiting (answers come by callback; at most ``--max-inflight`` are unanswered, the
driver waits on the oldest beyond that); the ticks are run ``--chunk`` at a time
straight on the simulator actor, without waiting for the bookings they cause. Each
order is recorded (capital reserved, committed), handed to the paper broker, filled on
a later tick, and its fill booked (committed).

  (1) market orders opened and filled: orders without take-profit or stop-loss. An
      order counts when its entry fill is committed (the `OrderFilled` event that
      leaves it FILLED). Its position stays open (the paper broker looks only at the
      positions a tick can close, so the open book does not slow the ticks). With
      ``--segment N`` the figure runs on a fresh System and database every N ticks
      (the clock runs only inside them); by default one System runs them all.
  (2) round trips: each order carries a take-profit and a stop-loss 0.05 to 0.2 % from
      the board's price when it is submitted, and a tick is 60 simulated seconds, so
      positions close within a few ticks. A round trip counts when its exit is
      committed (`PositionClosed`); positions still open at the end are reported, not
      counted.

After the last tick, every answer is awaited, the run settles (every booking
committed), and runs one more tick at a time while orders still wait for their fill;
the clock stops there. Then storage (`OmsStore`) must show every order FILLED, every
counted round trip CLOSED by tp or sl, and each profile's ledger audit clean; else the
run exits 1.

Baseline: a bare worker thread fed by a `SimpleQueue`, one message per order, each
answered by releasing a lock the caller waits on (the floor of one thread hand-off and
back in Python), measured before, between and after the figures (the median is used),
pinned too with ``--pin``. The machine is shared and noisy.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from decimal import Decimal
from pathlib import Path
from queue import SimpleQueue

from capflow.actors.config import load_config
from capflow.actors.logs import LogConfig, setup_logging
from capflow.actors.model import messages as m
from capflow.actors.model.money import round_half_even
from capflow.actors.system import System

#: every profile of a bench gets a large allocation: the paper account that they share
#: (whose cash the profiles divide) is made large enough for all of them
BIG_ACCOUNT = {"accounts": {"paper": {"initial_cash": "1000000000000000"}}}
#: the figure quoted in the issue, measured on this machine (see `REFERENCE_TEXT`)
REFERENCE_RATE = 3970.0
REFERENCE_TEXT = ("NautilusTrader 1.221.0 backtest engine, risk engine on, no "
                  "persistence: ~3,970 market orders + fills per second on this machine")
#: order size per symbol: far below each symbol's liquidity per tick
QTY = {"BTCUSDT": Decimal("0.001"), "ETHUSDT": Decimal("0.01"),
       "SOLUSDT": Decimal("0.1")}
ALLOCATION = 10 ** 9
#: take-profit / stop-loss distances of the round trips, cycled (fractions of the price)
TP_SL = (Decimal("0.0005"), Decimal("0.001"), Decimal("0.002"))
ROUND_TRIP_DT_S = 60.0
#: a MARKET entry is never filled above the price its capital was reserved at (the price
#: it was decided on plus this buffer). The driver pipelines orders, so an order may reach
#: the broker many ticks after the price it was decided on: a wide buffer keeps every
#: order filled, so each one is measured as a whole trip.
RESERVE_BUFFER_PCT = "10"
#: most extra ticks after the last one, to fill orders still on their way to the broker
MAX_EXTRA_TICKS = 50
CALL_TIMEOUT_S = 120.0


class Counter:
    """Counts committed entry fills and closes from the event bus (the writer's thread)."""

    def __init__(self) -> None:
        self.filled_orders = 0  # orders whose last entry fill is committed
        self.entry_fills = 0
        self.exit_fills = 0
        self.closed = 0
        self.closed_by: dict[str, int] = {}
        self.closed_ids: set[str] = set()

    def __call__(self, events) -> None:
        for e in events:
            t = type(e)
            if t is m.OrderFilled:
                self.entry_fills += 1
                if e.order.status == "FILLED":
                    self.filled_orders += 1
            elif t is m.PositionReduced:
                self.exit_fills += 1
            elif t is m.PositionClosed:
                self.closed += 1
                reason = e.position.close_reason or "?"
                self.closed_by[reason] = self.closed_by.get(reason, 0) + 1
                self.closed_ids.add(e.position.position_id)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _all_orders(store, pid: str) -> list:
    out, cursor = [], None
    while True:
        page, cursor = store.list_orders(pid, limit=10_000, cursor=cursor)
        out.extend(page)
        if cursor is None:
            return out


def run_segment(kind: str, ticks: int, first: int, args, workdir: str,
                pin: list[int] | None) -> dict:
    """One System over `ticks` ticks (orders numbered from `first`): its figures and the
    result of its checks."""
    round_trips = kind == "round_trips"
    run_dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir)
    empty = Path(run_dir, "capflow.toml")  # never pick up a capflow.toml of the cwd
    empty.write_text("")
    simulator = {"mode": "step", "seed": args.seed + first}
    if round_trips:
        simulator["dt_s"] = ROUND_TRIP_DT_S
    cfg = load_config(empty, env={},
                      storage={"url": f"sqlite:///{run_dir}/bench.db", "durable": True,
                               "sqlite_synchronous": args.sync},
                      simulator=simulator,
                      oms={"audit_log": f"{run_dir}/signals.jsonl",
                           "reserve_buffer_pct": RESERVE_BUFFER_PCT},
                      ledger={"call_timeout_s": CALL_TIMEOUT_S},
                      brokers=BIG_ACCOUNT, cpu_affinity=pin)
    system = System(cfg)
    counter = Counter()
    unsubscribe = None
    try:
        system.start()
        trading = system.trading
        unsubscribe = system.bus.subscribe(counter)
        pids = [f"bench-{i}" for i in range(args.profiles)]
        for pid in pids:
            system.create_profile(pid, ALLOCATION)
        symbols = [s for s in cfg.simulator.symbols if s in QTY]
        places = {s: cfg.simulator.symbols[s].price_places for s in symbols}
        sim = trading.sim.proxy()
        sim.advance(1).get(timeout=CALL_TIMEOUT_S)  # first prices on the board
        board = trading.board

        errors: list[BaseException] = []
        replies: deque = deque()

        def answered(reply) -> None:
            _, error = reply.result()
            if error is not None:
                errors.append(error)

        chunk = max(1, args.chunk)
        per_tick = args.orders_per_tick
        n_pids, n_syms = len(pids), len(symbols)
        submitted = 0
        ticks_run = 0
        report_every = max(chunk, args.progress_every)
        next_report = report_every
        t0 = time.perf_counter()
        while ticks_run < ticks:
            n = min(chunk, ticks - ticks_run)
            for _ in range(n * per_tick):
                k = first + submitted
                pid = pids[k % n_pids]
                sym = symbols[(k // n_pids) % n_syms]
                side = "BUY" if (k // (n_pids * n_syms)) % 2 == 0 else "SELL"
                tp = sl = None
                if round_trips:
                    d = TP_SL[k % len(TP_SL)]
                    up = 1 if side == "BUY" else -1
                    tick = board[sym]
                    ref = tick.ask if side == "BUY" else tick.bid
                    tp = round_half_even(ref * (1 + up * d), places[sym])
                    sl = round_half_even(ref * (1 - up * d), places[sym])
                replies.append(trading.submit_order(
                    pid, client_order_id=f"{kind}-{k}", symbol=sym, side=side,
                    type="MARKET", qty=QTY[sym], tp_price=tp, sl_price=sl,
                    callback=answered))
                submitted += 1
                while len(replies) > args.max_inflight:
                    replies.popleft().get(CALL_TIMEOUT_S)
                while replies and replies[0].done:
                    replies.popleft()
            sim.advance(n).get(timeout=CALL_TIMEOUT_S)
            ticks_run += n
            if errors:
                raise RuntimeError(f"an order failed: {errors[0]!r}")
            if ticks_run >= next_report:
                next_report += report_every
                _progress(f"  {kind}: {first + ticks_run:,} ticks, "
                          f"{first + submitted:,} submitted, "
                          f"{counter.filled_orders:,} filled, {counter.closed:,} closed "
                          f"(this System), {time.perf_counter() - t0:.1f} s")
        # every order recorded and handed to the broker ...
        for r in replies:
            r.get(CALL_TIMEOUT_S)
        trading.settle(CALL_TIMEOUT_S)
        # ... and filled: the last ones need a tick after they reached the broker
        extra = 0
        while counter.filled_orders < submitted and extra < MAX_EXTRA_TICKS:
            trading.advance(1, CALL_TIMEOUT_S)
            extra += 1
        elapsed = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"an order failed: {errors[0]!r}")
        problems = _verify(system, pids, kind, submitted, counter)
        return {"elapsed_s": elapsed, "ticks": ticks + 1 + extra, "extra_ticks": extra,
                "submitted": submitted, "filled_orders": counter.filled_orders,
                "closed": counter.closed, "entry_fills": counter.entry_fills,
                "exit_fills": counter.exit_fills, **problems}
    finally:
        if unsubscribe is not None:
            unsubscribe()
        system.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _count(into: dict[str, int], key: str) -> None:
    into[key] = into.get(key, 0) + 1


def _verify(system, pids: list[str], kind: str, submitted: int, counter: Counter) -> dict:
    """What storage holds, against what was submitted and counted."""
    store = system.trading.oms_store
    status = system.accounts.status[system.config.brokers.default_account]
    orders = [o for pid in pids for o in _all_orders(store, pid)]
    positions = store.positions_for_stats(pids)
    by_status: dict[str, int] = {}
    for o in orders:
        _count(by_status, o.status)
    pos_status: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for p in positions:
        _count(pos_status, p.status)
        if p.status == "CLOSED":
            _count(reasons, p.close_reason or "none")
    closed_ids = {p.position_id for p in positions
                  if p.status == "CLOSED" and p.close_reason in ("tp", "sl")}
    audits = {pid: system.audit(pid) for pid in pids}
    problems = []
    if len(orders) != submitted:
        problems.append(f"{len(orders)} orders stored, {submitted} submitted")
    if by_status.get("FILLED", 0) != submitted:
        problems.append(f"orders by status {by_status}, {submitted} submitted")
    if counter.filled_orders != submitted:
        problems.append(f"{counter.filled_orders} fills counted, {submitted} submitted")
    if len(positions) != submitted:
        problems.append(f"{len(positions)} positions stored, {submitted} orders")
    if kind == "round_trips":
        if not counter.closed_ids <= closed_ids:
            problems.append(f"{len(counter.closed_ids - closed_ids)} counted round trips "
                            "are not CLOSED by tp or sl in storage")
        if counter.closed != len(closed_ids):
            problems.append(f"{counter.closed} closes counted, {len(closed_ids)} stored")
        if set(reasons) - {"tp", "sl"}:
            problems.append(f"positions closed by {reasons}")
    elif pos_status.get("OPEN", 0) != submitted:
        problems.append(f"positions by status {pos_status}")
    if status.pending or status.booking_errors:
        problems.append(f"{status.pending} bookings pending, {status.booking_errors} "
                        "failed")
    for pid, a in audits.items():
        if not a.ok:
            problems.append(f"audit of {pid}: {a.violations[:3]}")
    return {"orders_by_status": by_status, "positions_by_status": pos_status,
            "closed_by": reasons, "stayed_open": pos_status.get("OPEN", 0),
            "audits_ok": all(a.ok for a in audits.values()), "problems": problems}


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def run_figure(kind: str, args, workdir: str, pin: list[int] | None) -> dict:
    """A figure over `args.ticks` ticks: one System, or (figure 1 with ``--segment``) a
    fresh System and database per segment; the sums of the segments."""
    seg = args.segment if kind == "orders" and args.segment > 0 else args.ticks
    total: dict = {"segments": 0, "elapsed_s": 0.0, "ticks": 0, "extra_ticks": 0,
                   "submitted": 0, "filled_orders": 0, "closed": 0, "entry_fills": 0,
                   "exit_fills": 0, "orders_by_status": {}, "positions_by_status": {},
                   "closed_by": {}, "stayed_open": 0, "audits_ok": True, "problems": []}
    done = 0
    while done < args.ticks:
        n = min(seg, args.ticks - done)
        part = run_segment(kind, n, done * args.orders_per_tick, args, workdir, pin)
        total["segments"] += 1
        for key in ("elapsed_s", "ticks", "extra_ticks", "submitted", "filled_orders",
                    "closed", "entry_fills", "exit_fills", "stayed_open"):
            total[key] += part[key]
        for key in ("orders_by_status", "positions_by_status", "closed_by"):
            _add(total[key], part[key])
        total["audits_ok"] = total["audits_ok"] and part["audits_ok"]
        total["problems"] += part["problems"]
        done += n
    count = total["closed"] if kind == "round_trips" else total["filled_orders"]
    fills = total["entry_fills"] + total["exit_fills"]
    el = total["elapsed_s"]
    total.update(count=count, rate=count / el, fills=fills, fills_per_s=fills / el)
    _progress(f"  {kind}: {count:,} in {el:.1f} s = {count / el:,.0f}/s, "
              f"{fills / el:,.0f} fills/s")
    return total


def bench_bare(seconds: float) -> float:
    """One message per order to a bare worker thread through a SimpleQueue, answered by
    releasing a lock; messages per second."""
    inbox: SimpleQueue = SimpleQueue()

    def worker() -> None:
        while True:
            job = inbox.get()
            if job is None:
                return
            job[1].release()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    n = 0
    try:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            lock = _thread.allocate_lock()
            lock.acquire()
            inbox.put((n, lock))
            lock.acquire()
            n += 1
            if n % 256 == 0 and time.perf_counter() >= deadline:
                break
        return n / (time.perf_counter() - t0)
    finally:
        inbox.put(None)
        thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ticks", type=int, default=100_000)
    ap.add_argument("--profiles", type=int, default=4)
    ap.add_argument("--orders-per-tick", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=10,
                    help="ticks run per simulator call (the orders of those ticks are "
                         "submitted before it)")
    ap.add_argument("--max-inflight", type=int, default=200,
                    help="most order submissions not yet answered")
    ap.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL",
                    help="SQLite synchronous: FULL survives a power loss, NORMAL only a "
                         "process crash")
    ap.add_argument("--pin", action="store_true",
                    help="pin capflow to one CPU (the `cpu_affinity` option; the storage "
                         "process then runs on the others)")
    ap.add_argument("--segment", type=int, default=0,
                    help="figure 1: a fresh System and database every this many ticks "
                         "(0: one System for the whole run)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--progress-every", type=int, default=5000,
                    help="print progress to stderr every this many ticks")
    ap.add_argument("--only", choices=["orders", "round_trips"],
                    help="run only this figure")
    ap.add_argument("--baseline-seconds", type=float, default=2.0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.ticks < 1 or args.profiles < 1 or args.orders_per_tick < 1:
        ap.error("--ticks, --profiles and --orders-per-tick must be at least 1")
    # capflow's errors only (and its storage process's): its messages are off until asked
    setup_logging(LogConfig(level="ERROR"))
    all_cpus = os.sched_getaffinity(0)
    pin = [min(all_cpus)] if args.pin else None
    base: list[float] = []
    figures: dict[str, dict] = {}

    def baseline() -> None:
        if pin:  # the baseline runs pinned too: the same conditions
            os.sched_setaffinity(0, pin)
        base.append(bench_bare(args.baseline_seconds))
        os.sched_setaffinity(0, all_cpus)
        _progress(f"baseline: {base[-1]:,.0f} messages/s")

    with tempfile.TemporaryDirectory(prefix="capflow-bench-oms-") as workdir:
        baseline()
        for kind in [args.only] if args.only else ["orders", "round_trips"]:
            _progress(f"{kind}: {args.ticks:,} ticks, {args.profiles} profiles, "
                      f"{args.orders_per_tick} order(s) per tick")
            figures[kind] = run_figure(kind, args, workdir, pin)
            os.sched_setaffinity(0, all_cpus)  # System pinned the whole process
            baseline()
    b = statistics.median(base)
    for f in figures.values():
        f["over_baseline"] = f["rate"] / b
    o, rt = figures.get("orders"), figures.get("round_trips")
    if o is not None:
        o["over_reference"] = o["rate"] / REFERENCE_RATE

    seg = (f", figure 1 in {o['segments']} Systems of <= {args.segment:,} ticks"
           if o is not None and o["segments"] > 1 else "")
    print(f"\noms bench: embedded System, durable (SQLite, synchronous={args.sync}), "
          f"paper broker, simulator in step mode; {args.ticks:,} ticks, "
          f"{args.profiles} profiles, {args.orders_per_tick} order(s) per tick, at most "
          f"{args.max_inflight:,} submissions in flight{seg}; "
          f"{'pinned to CPU ' + str(pin[0]) if pin else 'not pinned'}, "
          f"{len(all_cpus)} of {os.cpu_count()} CPUs")
    print(f"  {'figure':<38} {'elapsed s':>9} {'count':>9} {'per s':>9} {'fills/s':>9} "
          f"{'/ baseline':>10}")
    for label, f in (("(1) market orders opened + filled", o),
                     ("(2) round trips, closed by tp / sl", rt)):
        if f is not None:
            print(f"  {label:<38} {f['elapsed_s']:>9.1f} {f['count']:>9,} "
                  f"{f['rate']:>9,.0f} {f['fills_per_s']:>9,.0f} "
                  f"{f['over_baseline']:>10.4f}")
    print(f"  {'baseline: bare thread + SimpleQueue':<38} {'':>9} {'':>9} {b:>9,.0f} "
          f"{'':>9} {'':>10}   messages/s")
    note = "" if pin else ("; unpinned, it varies a lot from run to run on this "
                           "machine, pinned to one CPU much less")
    print(f"    (median of {len(base)}: {', '.join(f'{x:,.0f}' for x in base)}{note})")
    if o is not None:
        print(f"  (1) checked in storage: {o['submitted']:,} submitted, orders "
              f"{o['orders_by_status']}, positions {o['positions_by_status']}, "
              f"audits {'ok' if o['audits_ok'] else 'FAILED'}")
    if rt is not None:
        print(f"  (2) checked in storage: {rt['submitted']:,} submitted, orders "
              f"{rt['orders_by_status']}, {rt['count']:,} closed {rt['closed_by']}, "
              f"{rt['stayed_open']:,} stayed open (not counted), "
              f"audits {'ok' if rt['audits_ok'] else 'FAILED'}")
    print(f"  reference: {REFERENCE_TEXT}")
    if o is not None:
        print(f"  (1) / reference = {o['over_reference']:.2f}")
    problems = [f"{name}: {p}" for name, f in figures.items() for p in f["problems"]]
    for p in problems:
        print(f"  CHECK FAILED: {p}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "baseline_runs": base, "baseline": b,
            "reference": {"rate": REFERENCE_RATE, "text": REFERENCE_TEXT},
            "figures": figures, "ok": not problems}, indent=2, default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
