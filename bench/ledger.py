"""Reserve + release pairs per second through the ledger, against a bare baseline.

    python bench/ledger.py [--callers 32] [--seconds 3] [--rounds 3]

(a) through the LedgerActors (one per profile, 32 profiles), storage off;
(b) the same, durable (SQLite WAL, synchronous=FULL, group commit), each answer after
    its commit;
(c) the same Ledger calls on one bare worker thread fed by a SimpleQueue (the floor of a
    thread hand-off in Python), storage off.

Each caller thread owns one profile and loops reserve -> wait -> release -> wait. The
three are measured in interleaved rounds in one run, and medians are printed, because
this machine is shared and noisy. Aims: (a)/(c) >= 0.5 and (b) >= 10,000 pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import SimpleQueue

from capflow.actors.config import load_config
from capflow.actors.logs import LogConfig, setup_logging
from capflow.actors.model.clock import Clock
from capflow.actors.model.ledger import Ledger
from capflow.actors.reply import Reply
from capflow.actors.system import System, new_id

#: every profile of a bench gets a large allocation: the paper account that they share
#: (whose cash the profiles divide) is made large enough for all of them
BIG_ACCOUNT = {"accounts": {"paper": {"initial_cash": "1000000000000000"}}}


def _drive(callers: int, seconds: float, pair) -> float:
    """Run `pair(i, n)` in `callers` threads for `seconds`; return pairs per second."""
    counts = [0] * callers
    start = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def caller(i: int) -> None:
        start.wait()
        n = 0
        deadline = stop_at[0]
        while time.perf_counter() < deadline:
            pair(i, n)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def bench_system(callers: int, seconds: float, durable: bool, workdir: str,
                 pin: list[int] | None = None, synchronous: str = "FULL") -> float:
    url = f"sqlite:///{workdir}/bench-{time.time_ns()}.db"
    cfg = load_config(env={}, storage={"url": url, "durable": durable,
                                       "sqlite_synchronous": synchronous},
                      ledger={"max_live": callers * 2}, brokers=BIG_ACCOUNT,
                      cpu_affinity=pin)
    system = System(cfg).start()
    try:
        pids = [f"bench-{i}" for i in range(callers)]
        for pid in pids:
            system.create_profile(pid, "1000000")

        def pair(i: int, n: int) -> None:
            r = system.reserve(pids[i], "BTCUSDT", "10", f"{i}-{n}")
            system.release(pids[i], r.reservation.reservation_id)

        return _drive(callers, seconds, pair)
    finally:
        system.stop()


def bench_bare(callers: int, seconds: float) -> float:
    """The same Ledger calls, executed by one plain thread reading a SimpleQueue."""
    clock = Clock()
    ledgers = []
    for i in range(callers):
        led = Ledger(f"bare-{i}", "USDT", 2)
        led.deposit("1000000", "seed", clock.now())
        ledgers.append(led)
    inbox: SimpleQueue = SimpleQueue()

    def worker() -> None:
        while True:
            job = inbox.get()
            if job is None:
                return
            fn, args, reply = job
            try:
                reply.resolve(fn(*args, clock.now()))
            except Exception as exc:
                reply.fail(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def pair(i: int, n: int) -> None:
        led = ledgers[i]
        reply = Reply()
        inbox.put((led.reserve, (new_id("rsv"), f"{i}-{n}", "BTCUSDT", "10", 300), reply))
        reservation = reply.get(10).result
        reply = Reply()
        inbox.put((led.release, (reservation.reservation_id, "client"), reply))
        reply.get(10)

    try:
        return _drive(callers, seconds, pair)
    finally:
        inbox.put(None)
        thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--callers", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pin", action="store_true",
                    help="pin capflow to one CPU (the `cpu_affinity` option; the storage "
                         "process then runs on the others)")
    ap.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL",
                    help="SQLite synchronous for (b): FULL survives a power loss, NORMAL "
                         "only a process crash")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    # capflow's errors only (and its storage process's): its messages are off until asked
    setup_logging(LogConfig(level="ERROR"))
    pin = [min(os.sched_getaffinity(0))] if args.pin else None
    runs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    with tempfile.TemporaryDirectory(prefix="capflow-bench-") as workdir:
        for r in range(args.rounds):
            if pin:  # the bare baseline runs pinned too: the same conditions
                os.sched_setaffinity(0, pin)
            runs["c"].append(bench_bare(args.callers, args.seconds))
            runs["a"].append(bench_system(args.callers, args.seconds, False, workdir, pin))
            runs["b"].append(bench_system(args.callers, args.seconds, True, workdir, pin,
                                          args.sync))
            print(f"round {r + 1}: a={runs['a'][-1]:,.0f} b={runs['b'][-1]:,.0f} "
                  f"c={runs['c'][-1]:,.0f} pairs/s", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\nledger bench: {args.callers} callers over {args.callers} profiles, "
          f"{args.rounds} rounds x {args.seconds:g} s, "
          f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs; medians:")
    print(f"  (a) actors, storage off      {med['a']:>10,.0f} pairs/s")
    print(f"  (b) actors, durable (SQLite, synchronous={args.sync}) {med['b']:>10,.0f} "
          "pairs/s   aim >= 10,000")
    print(f"  (c) bare thread + queue      {med['c']:>10,.0f} pairs/s   (baseline)")
    print(f"  (a)/(c) = {med['a'] / med['c']:.2f}   aim >= 0.5")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med,
                                               "a_over_c": med["a"] / med["c"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
