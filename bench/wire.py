"""Round trips per second over the wire, against a bare ZeroMQ echo server.

    python bench/wire.py [--clients 1,8] [--seconds 3] [--rounds 3] [--json FILE]

Four paths, each server in its own process, answer REQ clients that are separate
processes too (one REQ socket each, `protocol.client.Client`, one request in flight, a
fresh id per request):
  echo        a bare pyzmq ROUTER that drains every ready request and sends the same
              frames back; the clients send it the encoded `ledger.get` request (the
              floor of a round trip through pyzmq and msgpack on this machine);
  ledger.get  the real server (System + Server) reading a profile's ledger;
  reserve     the same server, durable (SQLite WAL, synchronous=FULL, in a temporary
              directory): `allocation.reserve` then `allocation.release`, each answered
              after its commit; counted as pairs/s and as requests/s;
  quote       the same server: `allocation.quote` of BTCUSDT for the client's profile
              (ledger actor, account manager and liquidity provider gathered, then the
              decision); counted as quotes/s, only the ones answered ok.

Each client process owns one profile (made up front, allocated 1,000,000: the default
ticker limit of 10 % of equity and the fallback reserve leave 100,000 for BTCUSDT, far
above the minimum order notional of 50, so every quote succeeds). The four are measured
in interleaved rounds in one run for every client count, and medians are printed,
because this machine is shared and noisy. Latency is per request (a pair is two
requests), over every request of every client of a round. Aims at the largest client
count (8): ledger.get >= 0.5 of echo, reserve requests >= 0.25 of echo, quotes >= 0.25
of echo, p99 (ledger.get, reserve) < 5 ms. requests/s counts every answered round trip
(quotes/s only the ok ones); one answered with an error (a quote too, e.g.
INSUFFICIENT_CAPITAL), or with bytes that do not decode as one msgpack map, is counted
as failed, and the run exits 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from array import array
from pathlib import Path

import zmq

from capflow.protocol.client import Client, ClientTimeout, request_bytes

#: every profile of a bench gets a large allocation: the paper account that they share
#: (whose cash the profiles divide) is made large enough for all of them
BIG_ACCOUNT = {"accounts": {"paper": {"initial_cash": "1000000000000000"}}}
KINDS = ("echo", "ledger.get", "reserve", "quote")
LABELS = {"echo": "echo (bare ROUTER)", "ledger.get": "ledger.get",
          "reserve": "reserve+release, durable", "quote": "allocation.quote"}
#: per profile; a quote needs max_investable >= min_order_notional (50 by default), and
#: with the defaults it is 10 % of this (the ticker limit)
ALLOCATED = "1000000"
AMOUNT = "10"
SYMBOL = "BTCUSDT"
AIM_GET, AIM_RESERVE, AIM_QUOTE, AIM_P99_MS = 0.5, 0.25, 0.25, 5.0
MAX_ERRORS = 1000  # failed requests (error or undecodable replies) before a client gives up
STARTUP_S = 60.0  # how long a child may take to start (spawn, imports, migrations)


# -- the server processes ------------------------------------------------------------------

def _quiet_child() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent ends us by pid
    from capflow.actors.logs import LogConfig, setup_logging

    # capflow's errors only (and its storage process's): its messages are off until asked
    setup_logging(LogConfig(level="ERROR"))


def _serve_capflow(conn, url: str, config_file: str) -> None:
    """The real server over a durable System; runs until the parent says stop (or
    dies: the pipe then reads EOF)."""
    _quiet_child()
    try:
        from capflow.actors.config import load_config
        from capflow.actors.system import System
        from capflow.protocol.server import Server

        cfg = load_config(config_file, env={}, storage={"url": url, "durable": True},
                          server={"endpoint": "tcp://127.0.0.1:*",
                                  "events_endpoint": "tcp://127.0.0.1:*"},
                          brokers=BIG_ACCOUNT)
        system = System(cfg).start()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        try:
            server = Server(system).start()
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            return
        try:
            conn.send(("ready", server.endpoint))
            try:
                conn.recv()
            except EOFError:
                pass
        finally:
            server.stop()
    finally:
        system.stop()


def _serve_echo(conn) -> None:
    """A bare ROUTER: after each poll, receive everything ready and send it straight
    back (same socket options as the real server)."""
    _quiet_child()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    try:
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, 100_000)
        router.setsockopt(zmq.RCVHWM, 100_000)
        router.bind("tcp://127.0.0.1:*")
        conn.send(("ready", router.getsockopt(zmq.LAST_ENDPOINT).decode()))
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(conn.fileno(), zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if router in ready:
                while True:
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    router.send_multipart(frames, zmq.NOBLOCK)
            if conn.fileno() in ready:
                return  # "stop", or EOF: the parent is gone
    finally:
        router.close(0)
        ctx.term()


# -- the client processes ------------------------------------------------------------------

def _client_loop(conn, wid: int) -> None:
    """A client process: runs one measurement per command, until told to stop."""
    _quiet_child()
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd is None:
            return
        try:
            if not _measure_one(conn, wid, *cmd):
                return
        except Exception:
            conn.send(("error", f"client {wid}:\n{traceback.format_exc()}"))


def _measure_one(conn, wid: int, kind: str, endpoint: str, seconds: float, tag: str,
                 warmup_s: float) -> bool:
    """Warm up, say ready, wait for the common start time, run; False: told to stop."""
    profile = f"bench-{wid}"
    client = Client(endpoint, timeout_s=5.0, retries=0)  # a timeout is a failure here
    send = client.send_raw
    clock = time.perf_counter_ns
    lat = array("q")
    n = units = errors = 0  # units: reserve+release pairs, or quotes answered ok
    first_error = ""

    def call(op: str, args: dict, rid: str) -> dict | None:
        """One round trip; the reply, or None for a failed request (counted)."""
        nonlocal errors, first_error
        rid, data = request_bytes(op, args, rid)
        t0 = clock()
        try:
            reply = send(data, rid, op)
        except ClientTimeout:
            raise
        except Exception as exc:  # not one msgpack map: a server bug; count it, go on
            reply = {"error": f"undecodable reply: {exc!r}"}
        lat.append(clock() - t0)
        if (reply.get("id") == rid) if kind == "echo" else (reply.get("ok") is True):
            return reply
        errors += 1
        first_error = first_error or f"{op}: {reply.get('error', reply)}"[:300]
        if errors > MAX_ERRORS:
            raise RuntimeError(f"more than {MAX_ERRORS} failed requests; the first: "
                               f"{first_error}")
        return None

    def get() -> None:  # echo: the same request bytes (a fresh id each), the same client
        nonlocal n
        n += 1
        call("ledger.get", {"profile_id": profile}, f"{tag}-{n}")

    def pair() -> None:
        nonlocal n, units
        n += 1
        r = call("allocation.reserve", {"profile_id": profile, "symbol": SYMBOL,
                                        "amount": AMOUNT, "client_request_id": f"{tag}-{n}"},
                 f"{tag}-{n}a")
        if r is not None and call("allocation.release", {
                "profile_id": profile, "reservation_id": r["result"]["reservation_id"]},
                f"{tag}-{n}b") is not None:
            units += 1

    def quote() -> None:  # only an ok answer counts (an error is a failed request)
        nonlocal n, units
        n += 1
        if call("allocation.quote", {"profile_id": profile, "symbol": SYMBOL},
                f"{tag}-{n}") is not None:
            units += 1

    step = {"reserve": pair, "quote": quote}.get(kind, get)
    try:
        until = time.monotonic() + warmup_s
        while time.monotonic() < until:
            step()
        conn.send(("ready",))
        start_at = conn.recv()
        if start_at is None:
            return False
        lat = array("q")
        units = errors = 0
        first_error = ""
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        deadline = start_at + seconds
        while time.monotonic() < deadline:
            step()
        end = time.monotonic()
        conn.send(("done", units, errors, first_error, end, lat.tobytes()))
        return True
    finally:
        client.close()


# -- the driver ----------------------------------------------------------------------------

def _pct(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[k] / 1e6


def _expect(conn, what: str, timeout: float):
    if not conn.poll(timeout):
        raise RuntimeError(f"no {what} within {timeout:g} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(msg[1])
    if msg[0] != what:
        raise RuntimeError(f"expected {what}, got {msg[0]}")
    return msg


def measure(workers: list, kind: str, endpoint: str, clients: int, seconds: float,
            tag: str, warmup_s: float) -> dict:
    """One measurement: `clients` client processes, `seconds` long, started together."""
    conns = [conn for _, conn in workers[:clients]]
    for i, conn in enumerate(conns):
        conn.send((kind, endpoint, seconds, f"{tag}w{i}", warmup_s))
    for conn in conns:
        _expect(conn, "ready", warmup_s + 30)
    start_at = time.monotonic() + 0.02
    for conn in conns:
        conn.send(start_at)
    units, errors, first_error, end, lat = 0, 0, "", start_at, array("q")
    for conn in conns:
        _, n, failed, first, finished, raw = _expect(conn, "done", seconds + 30)
        units += n
        errors += failed
        first_error = first_error or first
        end = max(end, finished)
        lat.frombytes(raw)
    ordered = sorted(lat)
    elapsed = end - start_at
    # quotes: only the ones answered ok; the other paths: every answered round trip
    rps = (units if kind == "quote" else len(ordered)) / elapsed
    return {"rps": rps, "pairs_s": units / elapsed if kind == "reserve" else None,
            "p50_ms": _pct(ordered, 0.50), "p99_ms": _pct(ordered, 0.99),
            "requests": len(ordered), "errors": errors, "first_error": first_error}


def _start_child(ctx, target, args: tuple, procs: list) -> tuple:
    parent, child = ctx.Pipe()
    # not daemonic: the capflow server starts its own storage process (every child is
    # ended by pid in _stop_all)
    proc = ctx.Process(target=target, args=(child, *args), daemon=False)
    proc.start()
    procs.append((proc, parent))
    child.close()
    return proc, parent


def _wait_health(endpoint: str) -> None:
    """Until `system.health` answers ok (the Client resends every 0.5 s)."""
    with Client(endpoint, timeout_s=0.5, retries=int(STARTUP_S / 0.5)) as c:
        health = c.health()
        if health.get("status") != "ok":
            raise RuntimeError(f"capflow is not healthy: {health}")


def _make_profiles(endpoint: str, count: int) -> None:
    with Client(endpoint, timeout_s=10.0, retries=0) as c:
        for i in range(count):
            c.profile_create(f"bench-{i}", ALLOCATED)


def _stop_all(procs: list) -> None:
    """Ask every child to stop, then end by pid whatever is still running."""
    for _proc, conn in procs:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(proc.is_alive() for proc, _ in procs):
        for _proc, conn in procs:  # read what a child may be stuck sending (on errors)
            try:
                while conn.poll():
                    conn.recv()
            except (EOFError, OSError):
                pass
        time.sleep(0.02)
    for proc, conn in procs:
        if proc.is_alive():
            proc.terminate()  # SIGTERM to proc.pid
            proc.join(5)
        if proc.is_alive():
            proc.kill()  # SIGKILL to proc.pid
            proc.join(5)
        conn.close()


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,8",
                    help="client process counts, comma-separated (default 1,8)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=0.2,
                    help="seconds each client runs before a measurement starts")
    ap.add_argument("--dir", help="directory for the SQLite file (default: a temporary "
                    "directory under $TMPDIR)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    counts = sorted({int(x) for x in args.clients.split(",") if x.strip()})
    if not counts or counts[0] < 1:
        ap.error("--clients needs positive counts")
    top = counts[-1]
    # SIGTERM unwinds like Ctrl-C, so the `finally` below ends every child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("spawn")
    procs: list = []
    runs: dict[str, list[dict]] = {f"{k}@{n}": [] for n in counts for k in KINDS}
    t_begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="capflow-bench-wire-", dir=args.dir) as work:
        try:  # every child is ended before the directory goes
            config_file = Path(work, "empty.toml")  # not ./capflow.toml: the defaults
            config_file.write_text("")
            url = f"sqlite:///{work}/wire.db"
            _, capflow_conn = _start_child(ctx, _serve_capflow, (url, str(config_file)),
                                           procs)
            _, echo_conn = _start_child(ctx, _serve_echo, (), procs)
            workers = [_start_child(ctx, _client_loop, (wid,), procs) for wid in range(top)]
            endpoint = {"ledger.get": _expect(capflow_conn, "ready", STARTUP_S)[1],
                        "echo": _expect(echo_conn, "ready", STARTUP_S)[1]}
            endpoint["reserve"] = endpoint["quote"] = endpoint["ledger.get"]
            _wait_health(endpoint["ledger.get"])
            _make_profiles(endpoint["ledger.get"], top)
            for r in range(args.rounds):
                for n in counts:
                    parts = []
                    for kind in KINDS:
                        fig = measure(workers, kind, endpoint[kind], n, args.seconds,
                                      f"r{r}n{n}{kind[0]}", args.warmup)
                        runs[f"{kind}@{n}"].append(fig)
                        failed = f" ({fig['errors']} failed)" if fig["errors"] else ""
                        parts.append(f"{kind} {fig['rps']:,.0f}/s p99 {fig['p99_ms']:.2f} ms"
                                     + failed)
                    print(f"round {r + 1}, {n} client{'s' if n > 1 else ''}: "
                          + " | ".join(parts), flush=True)
        finally:
            _stop_all(procs)
    med = {key: {f: (None if figs[0][f] is None else statistics.median(x[f] for x in figs))
                 for f in ("rps", "pairs_s", "p50_ms", "p99_ms")}
           for key, figs in runs.items()}
    failed = {key: sum(x["errors"] for x in figs) for key, figs in runs.items()}
    get_ratio = med[f"ledger.get@{top}"]["rps"] / med[f"echo@{top}"]["rps"]
    res_ratio = med[f"reserve@{top}"]["rps"] / med[f"echo@{top}"]["rps"]
    quote_ratio = med[f"quote@{top}"]["rps"] / med[f"echo@{top}"]["rps"]
    p99 = {k: med[f"{k}@{top}"]["p99_ms"] for k in ("ledger.get", "reserve")}
    print(f"\nwire bench: servers and clients in separate processes, REQ clients "
          f"{'/'.join(map(str, counts))}, {args.rounds} rounds x {args.seconds:g} s, "
          f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs, "
          f"{time.monotonic() - t_begin:.0f} s in all; medians:")
    print(f"  {'clients':>7}  {'path':<26} {'requests/s':>10} {'pairs/s':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'failed':>6}")
    for n in counts:
        for kind in KINDS:
            f = med[f"{kind}@{n}"]
            print(f"  {n:>7}  {LABELS[kind]:<26} {f['rps']:>10,.0f} "
                  f"{_fmt(f['pairs_s'], ',.0f'):>9} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f} "
                  f"{failed[f'{kind}@{n}']:>6}")
    print(f"  at {top} clients: ledger.get / echo = {get_ratio:.2f}   aim >= {AIM_GET} "
          f"({_verdict(get_ratio >= AIM_GET)})")
    print(f"  at {top} clients: reserve requests / echo = {res_ratio:.2f}   "
          f"aim >= {AIM_RESERVE} ({_verdict(res_ratio >= AIM_RESERVE)})")
    print(f"  at {top} clients: quotes / echo = {quote_ratio:.2f}   "
          f"aim >= {AIM_QUOTE} ({_verdict(quote_ratio >= AIM_QUOTE)})")
    print(f"  at {top} clients: p99 ledger.get {p99['ledger.get']:.2f} ms, reserve "
          f"{p99['reserve']:.2f} ms   aim < {AIM_P99_MS:g} ms "
          f"({_verdict(max(p99.values()) < AIM_P99_MS)})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "clients": counts, "seconds": args.seconds, "rounds": args.rounds,
            "cpus": len(os.sched_getaffinity(0)), "runs": runs, "median": med, "failed": failed,
            "ratios": {"clients": top, "ledger_get_over_echo": get_ratio,
                       "reserve_over_echo": res_ratio, "quote_over_echo": quote_ratio},
            "aims": {"ledger_get_over_echo": AIM_GET, "reserve_over_echo": AIM_RESERVE,
                     "quote_over_echo": AIM_QUOTE, "p99_ms": AIM_P99_MS}}, indent=2))
    if any(failed.values()):
        first = next(x["first_error"] for figs in runs.values() for x in figs
                     if x["errors"])
        print(f"FAILED: {sum(failed.values())} requests got an error or undecodable reply "
              f"(counted above); the first: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
