"""A live account's order path and fill booking, against the Bybit v5 emulator
(bench/venues/bybit.py) that the real ccxt library talks to over HTTP on 127.0.0.1.

    python bench/venue.py [--signals 1000] [--fills 10000] [--json FILE]

(1) signal.submit -> the order is at the venue: for each signal (a MARKET BUY, sent by
    the ccxt adapter as a limit IOC at the reserved price), the time from the embedded
    `System.signal` call until the venue holds the order with its client order id. The
    venue's ask has no size, so every IOC ends unfilled and its capital comes back: the
    figure is the order path alone, one signal at a time, at most `--signal-rate` a
    second (default 15: below Bybit's 20 order creates a second per UID, which the adapter
    honours; faster, the figure is the venue's limit, not the order path). Baseline in
    the same run: the
    same order placed by a bare ccxt client (`create_order`, limit IOC) against the same
    venue, one at a time.
(2) fills booked per second when the venue reports many fills of one order at once: a
    resting LIMIT BUY is filled by the venue in `--fills` pieces before capflow's next
    poll; the figure is pieces / the time until the ledger has booked them all (the order
    filled, its position holding the quantity less the base-coin fee). Baseline: the
    bare ccxt read of the same trades (`fetch_order_trades`).

(3) reconciliation time for an account with `--orders` orders at the venue (default
    10,000): half of them resting (open) limit BUYs, half filled in one fill each (in the
    order history and the execution list), none placed by capflow (an account traded
    before it, or shared), besides the fills of (2) (capflow's, booked: looked up in
    the fills table): `account.reconcile` reads every page of the balances, open orders
    and fills, and reports the 10,000. Figure: the time of the `account.reconcile`
    call. Baseline: the bare ccxt reads of the same pages (`fetch_balance`,
    `fetch_open_orders` and `fetch_my_trades` with every page: 50 open orders and 100
    fills a page, Bybit's largest, which ccxt asks for).

Durable storage (SQLite, synchronous=FULL) in a temporary folder. The figures are this
machine's, beside baselines measured in the same run, because it is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from capflow.actors.config import load_config
from capflow.actors.logs import LogConfig, setup_logging
from capflow.actors.system import System
from capflow.bench.venues.bybit import BybitVenue
from capflow.bench.venues.bybit_seed import seed_orders
from capflow.brokers.ccxt_settings import entry_client_id

SYMBOL = "BTCUSDT"
KEY_ENV, SECRET_ENV = "CAPFLOW_BENCH_VENUE_KEY", "CAPFLOW_BENCH_VENUE_SECRET"


def _wait(cond, timeout: float, what: str):
    deadline = time.perf_counter() + timeout
    while not (got := cond()):
        if time.perf_counter() > deadline:
            raise SystemExit(f"venue bench: timed out waiting for {what}")
        time.sleep(0.0005)
    return got


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _system(venue: BybitVenue, workdir: str) -> System:
    os.environ[KEY_ENV], os.environ[SECRET_ENV] = venue.api_key, venue.secret
    settings = {"exchange": "bybit", "api_key_env": KEY_ENV, "api_secret_env": SECRET_ENV,
                "urls": venue.urls, "timeout_s": 5, "poll_interval_s": 0.02}
    cfg = load_config(env={}, storage={"url": f"sqlite:///{workdir}/venue-bench.db"},
                      simulator={"mode": "step", "symbols": {}},
                      oms={"audit_log": f"{workdir}/signals.jsonl"},
                      brokers={"default_account": "live", "accounts": {"live": {
                          "adapter": "capflow.brokers.ccxt_venue:CcxtSpotBroker",
                          "currency": "USDT", "initial_cash": "100000000",
                          "settings": settings}}})
    system = System(cfg).start()
    _wait(lambda: system.trading.accounts.status["live"].state == "CONNECTED", 30,
          "the adapter to connect")
    return system


def bench_signals(venue: BybitVenue, system: System, n: int, rate: float = 0.0) -> dict:
    venue.set_price(SYMBOL, "30000.00", "30000.10", ask_size="0")  # every IOC ends unfilled
    system.create_profile("sig", "1000000")
    ours: list[float] = []
    gap = 1 / rate if rate > 0 else 0.0
    for i in range(n):
        t0 = time.perf_counter()
        answer = system.signal("sig", SYMBOL, "BUY", "30000.10", qty="0.001",
                               tp_pct="2", sl_pct="1", signal_id=f"s{i}")
        if not answer["risk_ok"]:
            raise SystemExit(f"venue bench: signal refused: {answer}")
        link = entry_client_id(answer["order_id"])
        _wait(lambda link=link: venue.order(link) is not None, 30, "the order at the venue")
        ours.append((time.perf_counter() - t0) * 1000)
        time.sleep(max(0.0, t0 + gap - time.perf_counter()))
    client = venue.ccxt(timeout=5000)
    client.load_markets()
    bare: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        client.create_order("BTC/USDT", "limit", "buy", 0.001, 30000.10,
                            {"timeInForce": "IOC", "orderLinkId": f"bare{i}"})
        bare.append((time.perf_counter() - t0) * 1000)
    return {"signals": n, "rate": rate, "p50_ms": _pct(ours, 0.5), "p99_ms": _pct(ours, 0.99),
            "bare_p50_ms": _pct(bare, 0.5), "bare_p99_ms": _pct(bare, 0.99),
            "mean_ms": statistics.fmean(ours)}


def bench_fills(venue: BybitVenue, system: System, pieces: int) -> dict:
    venue.auto_match = False
    venue.set_price(SYMBOL, "30000.00", "30000.10")
    step = Decimal("0.000001")  # the emulator's BTCUSDT lot step
    qty = step * pieces
    system.create_profile("fills", "1000000")
    order = system.submit_order("fills", "many-fills", SYMBOL, "BUY", str(qty),
                                type="LIMIT", price="29000.00").result
    link = entry_client_id(order.order_id)
    _wait(lambda: venue.order(link) is not None, 30, "the resting order at the venue")
    for _ in range(pieces):  # the venue fills it in pieces before capflow's next poll
        venue.fill(link, step, "29000.00")
    t0 = time.perf_counter()
    _wait(lambda: system.trading.get_order("fills", order.order_id).status == "FILLED",
          600, "every fill booked")
    elapsed = time.perf_counter() - t0
    client = venue.ccxt(timeout=60000)
    client.load_markets()
    venue_id = venue.order(link).order_id
    t1 = time.perf_counter()
    trades = client.fetch_order_trades(venue_id, "BTC/USDT", None, None,
                                       {"paginate": True, "paginationCalls": 10_000})
    bare = time.perf_counter() - t1
    return {"fills": pieces, "booked_per_s": pieces / elapsed, "elapsed_s": elapsed,
            "bare_read_per_s": len(trades) / bare if bare else None,
            "bare_trades_read": len(trades)}


def bench_reconcile(venue: BybitVenue, system: System, orders: int) -> dict:
    venue.auto_match = False
    seed_orders(venue, SYMBOL, open_orders=orders // 2, filled_orders=orders - orders // 2)
    venue.clear_requests()
    t0 = time.perf_counter()
    report = system.trading.accounts.reconcile("live", timeout=600)
    elapsed = time.perf_counter() - t0
    pages = {p: len(venue.requests(p)) for p in ("/v5/order/realtime",
                                                   "/v5/execution/list")}
    client = venue.ccxt(timeout=60000)
    client.load_markets()
    every = {"paginate": True, "paginationCalls": 10_000}
    t1 = time.perf_counter()
    client.fetch_balance()
    open_ = client.fetch_open_orders(None, None, None, dict(every))
    trades = client.fetch_my_trades(None, None, None, dict(every))
    bare = time.perf_counter() - t1
    return {"orders": orders, "elapsed_s": elapsed, "bare_s": bare,
            "unknown_orders": len(report["unknown_orders"]),
            "unknown_fills": len(report["unknown_fills"]),
            "bare_open_orders": len(open_), "bare_trades": len(trades), "pages": pages}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=int, default=1000)
    ap.add_argument("--signal-rate", type=float, default=15.0,
                    help="signals a second at most (0: back to back)")
    ap.add_argument("--fills", type=int, default=10_000)
    ap.add_argument("--orders", type=int, default=10_000,
                    help="orders at the venue to reconcile (half open, half filled)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    setup_logging(LogConfig(level="WARNING"))
    with tempfile.TemporaryDirectory() as workdir, \
            BybitVenue(balances={"USDT": "1000000000", "BTC": "0"}) as venue:
        venue.set_price(SYMBOL, "30000.00", "30000.10")
        system = _system(venue, workdir)
        try:
            sig = bench_signals(venue, system, args.signals, args.signal_rate)
            fills = bench_fills(venue, system, args.fills)
            recon = bench_reconcile(venue, system, args.orders)
        finally:
            system.stop()
    pace = f" at {sig['rate']:g}/s" if sig["rate"] else ""
    print(f"venue bench (Bybit v5 emulator over HTTP, ccxt {_ccxt_version()}, "
          f"{os.cpu_count()} CPUs):")
    print(f"  (1) signal.submit -> order at the venue, {sig['signals']} signals{pace}: "
          f"p50 {sig['p50_ms']:.2f} ms, p99 {sig['p99_ms']:.2f} ms")
    print(f"      baseline: bare ccxt create_order: p50 {sig['bare_p50_ms']:.2f} ms, "
          f"p99 {sig['bare_p99_ms']:.2f} ms")
    print(f"  (2) {fills['fills']:,} venue fills of one order booked in "
          f"{fills['elapsed_s']:.2f} s: {fills['booked_per_s']:,.0f} fills/s")
    if fills["bare_read_per_s"]:
        print(f"      baseline: bare ccxt fetch_order_trades of {fills['bare_trades_read']:,}"
              f" trades: {fills['bare_read_per_s']:,.0f} trades/s")
    print(f"  (3) reconcile, {recon['orders']:,} orders at the venue (half open, half filled): "
          f"{recon['elapsed_s']:.2f} s ({recon['unknown_orders']:,} open orders and "
          f"{recon['unknown_fills']:,} fills reported; pages read: "
          f"{recon['pages']['/v5/order/realtime']} of open orders, "
          f"{recon['pages']['/v5/execution/list']} of fills)")
    print(f"      baseline: bare ccxt reads of the same pages "
          f"({recon['bare_open_orders']:,} open orders, {recon['bare_trades']:,} fills): "
          f"{recon['bare_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"signals": sig, "fills": fills,
                                               "reconcile": recon}, indent=2))
    return 0


def _ccxt_version() -> str:
    import ccxt

    return ccxt.__version__


if __name__ == "__main__":
    sys.exit(main())
